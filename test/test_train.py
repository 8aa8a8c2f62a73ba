"""mobile-vla-train on simulator bags: staleness sampling, the feature cache, a complete model
directory, resuming, DDP with two processes, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from bag_fixtures import write_episode_bag

from mobile_vla_ros.core.backends import create_backend
from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.tools import record_sim, train
from mobile_vla_ros.tools.evaluate import Recording


@pytest.fixture(scope="module")
def sim_bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim_bags")
    assert record_sim.main(["--episodes", "4", "--seed", "20", "--out", str(root)]) == 0
    return root


def train_args(sim_bags, tiny_vlm_dir, out, cache, *extra) -> list[str]:
    return ["--bags", str(sim_bags), "--out", str(out), "--vlm-model-path", str(tiny_vlm_dir), "--cache-dir",
            str(cache), "--batch-size", "64", "--lr", "3e-3", *extra]


def test_staleness_picks_older_images_within_the_samples_bag():
    spec = ModelSpec.load(__import__("mobile_vla_ros.paths", fromlist=["x"]).default_model_dir())
    recs, feats = [], []
    for b in range(2):
        rec = Recording()
        rec.images = [(10.0 + 0.1 * i, np.zeros((2, 2, 3), np.uint8)) for i in range(20)]
        rec.sensor = [(10.0 + i / 650, np.zeros(6, np.float32)) for i in range(650 * 2)]
        rec.commands = [(10.0 + i / 50, np.zeros(2, np.float32)) for i in range(100)]
        rec.executed = rec.commands
        recs.append(rec)
        feats.append(np.arange(20, dtype=np.float32)[:, None].repeat(64, 1) + 100 * b)
    data = train.build_dataset(recs, feats, spec, sample_dt=0.05, twist_mapping=["linear.x", "angular.z"])
    samples = np.arange(len(data))
    fresh = data.features[data.feature_index(samples, np.zeros(len(data)))][:, 0]
    stale = data.features[data.feature_index(samples, np.full(len(data), 0.35))][:, 0]
    t = (data.times % train.BAG_GAP) - 10.0
    bag = (data.times // train.BAG_GAP).astype(int)
    np.testing.assert_array_equal(fresh % 100, np.floor(t / 0.1 + 1e-9))  # newest image at t
    np.testing.assert_array_equal(stale % 100, np.maximum(np.floor((t - 0.35) / 0.1 + 1e-9), 0))
    np.testing.assert_array_equal(stale // 100, bag)  # never an image of another bag
    assert train.staleness_range("auto", 3.33, 0.05) == pytest.approx((0.05, 0.05 + 1 / 3.33))
    assert train.staleness_range("fresh", 3.33, 0.05) == (0.0, 0.0)
    with pytest.raises(ValueError, match="MIN <= MAX"):
        train.staleness_range("0.5,0.1", 3.33, 0.05)


def test_train_writes_a_complete_model_that_beats_zero_action_and_resumes(sim_bags, tiny_vlm_dir, tmp_path, capsys):
    out, cache = tmp_path / "model", tmp_path / "cache"
    assert train.main(train_args(sim_bags, tiny_vlm_dir, out, cache, "--epochs", "3", "--staleness", "0.1,0.6")) == 0
    cached = sorted(cache.rglob("*.npy"))
    assert len(cached) == 4  # one feature file per bag
    spec = ModelSpec.load(out)
    assert spec.staleness_range == (0.1, 0.6) and spec.vlm_backend == "kosmos2" and spec.feature_dim == 64
    assert (out / "vlm" / "config.json").is_file() and (out / "action_expert.pt").is_file()
    assert spec.motion_input == "motion_since_image"  # the default: the motion since the image as a third input
    backend = create_backend("onnxruntime", out, spec, None)
    actions = backend.run(np.zeros((1, 64), np.float32), np.zeros((1, 65, 6), np.float32), np.zeros((1, 4), np.float32))
    assert actions.shape == (1, 8, 2) and np.isfinite(actions).all()
    report = json.loads((out / "train_report.json").read_text())
    assert len(report["history"]) == 3
    assert report["best_val_mae_chunk"] < report["val_zero_action_mae"]
    mtimes = [p.stat().st_mtime for p in cached]
    capsys.readouterr()
    assert train.main(train_args(sim_bags, tiny_vlm_dir, out, cache, "--epochs", "5", "--staleness", "0.1,0.6",
                                 "--resume")) == 0
    assert "resumed after epoch 3" in capsys.readouterr().out
    assert [p.stat().st_mtime for p in sorted(cache.rglob("*.npy"))] == mtimes  # features came from the cache
    history = json.loads((out / "train_report.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]


def test_two_process_ddp_trains_the_same_model_as_one(sim_bags, tiny_vlm_dir, tmp_path):
    common = ["--epochs", "3", "--staleness", "fresh"]
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "one", tmp_path / "cache", *common)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                           str(29500 + os.getpid() % 1000), "-m", "mobile_vla_ros.tools.train",
                           *train_args(sim_bags, tiny_vlm_dir, tmp_path / "two", tmp_path / "cache", *common)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    one = json.loads((tmp_path / "one" / "train_report.json").read_text())
    two = json.loads((tmp_path / "two" / "train_report.json").read_text())
    for a, b in zip(one["history"], two["history"]):
        assert b["mae_chunk"] == pytest.approx(a["mae_chunk"], rel=0.02, abs=2e-3)


def test_bad_bags_stop_with_one_line(tmp_path, tiny_vlm_dir):
    def run(*args):
        proc = subprocess.run([sys.executable, "-m", "mobile_vla_ros.tools.train", "--out", str(tmp_path / "m"),
                               "--vlm-model-path", str(tiny_vlm_dir), *args], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr.strip().splitlines()[-1]

    assert "no such bag or directory" in run("--bags", str(tmp_path / "missing"))
    no_instruction = [write_episode_bag(tmp_path / f"b{i}", instruction=None) for i in range(2)]
    assert "no instruction" in run("--bags", *map(str, no_instruction))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("not: a bag")
    assert "cannot be read" in run("--bags", str(tmp_path / "broken"), str(no_instruction[0]))
