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

from mobile_vla_ros.core.backend_factory import create_backend
from mobile_vla_ros.core.model_spec import INPUT_FEATURES, INPUT_SENSOR, ModelSpec
from mobile_vla_ros.tools.recordings import Recording
from mobile_vla_ros.tools.training import make_default_model as recipe
from mobile_vla_ros.tools.training import train


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


def test_samples_align_window_end_targets_and_features_with_the_sample_time():
    """Values that are their own timestamps make any misalignment visible: the window ends at the
    newest sample at or before t, target k is the command in force at t + k*dt, the features are
    those of the newest image at or before t - staleness."""
    spec = ModelSpec.load(__import__("mobile_vla_ros.paths", fromlist=["x"]).default_model_dir())
    rec = Recording()
    rec.images = [(10.0 + 0.1 * i, np.zeros((2, 2, 3), np.uint8)) for i in range(30)]
    rec.sensor = [(10.0 + j / 650, np.array([j / 650, 0, 0, 0, 0, 9.81], np.float32)) for j in range(650 * 3)]
    rec.commands = [(10.0 + m / 50, np.array([m / 50, -m / 50], np.float32)) for m in range(150)]
    rec.executed = rec.commands
    feats = np.arange(30, dtype=np.float32)[:, None].repeat(64, 1)
    data = train.build_dataset([rec], [feats], spec, sample_dt=0.05, twist_mapping=["linear.x", "angular.z"])
    samples = np.arange(len(data))
    t = data.times - 10.0
    windows = data.windows(samples, spec.sensor_window)[:, :, 0]
    newest = np.floor(t * 650 + 1e-6) / 650
    np.testing.assert_allclose(windows[:, -1], newest, atol=1e-6)
    np.testing.assert_allclose(np.diff(windows, axis=1), 1 / 650, atol=1e-6)  # contiguous, oldest first
    steps = t[:, None] + np.arange(spec.chunk_size) * spec.action_dt
    np.testing.assert_allclose(data.targets[:, :, 0], np.floor(steps * 50 + 1e-6) / 50, atol=1e-6)
    np.testing.assert_allclose(data.targets[:, :, 1], -data.targets[:, :, 0])
    for staleness in (0.0, 0.25):
        got = data.features[data.feature_index(samples, np.full(len(data), staleness))][:, 0]
        np.testing.assert_array_equal(got, np.maximum(np.floor((t - staleness) * 10 + 1e-6), 0))


def test_a_different_vlm_or_pooling_gets_its_own_feature_cache(tiny_vlm_dir, tmp_path):
    """The cache key is the feature function's identity: pooling, backend and every byte of the VLM's
    files; features computed under one are never served for another."""
    import shutil

    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    base = ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(tiny_vlm_dir))
    key = train.vlm_key(base, tiny_vlm_dir)
    assert train.vlm_key(base, tiny_vlm_dir) == key
    assert train.vlm_key(ExtractorConfig(backend="kosmos2", pooling="mean_text", model_path=str(tiny_vlm_dir)),
                         tiny_vlm_dir) != key
    assert train.vlm_key(ExtractorConfig(backend="kosmos2_clip", pooling="last_token",
                                         model_path=str(tiny_vlm_dir)), tiny_vlm_dir) != key
    changed = tmp_path / "vlm"
    shutil.copytree(tiny_vlm_dir, changed)
    weights = next(p for p in changed.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert train.vlm_key(base, changed) != key

    rec = Recording()
    rec.images = [(0.1 * i, np.full((32, 32, 3), 40 * i, np.uint8)) for i in range(3)]
    rec.instructions = [(0.0, "go to the red cylinder")]
    mean_text = ExtractorConfig(backend="kosmos2", pooling="mean_text", model_path=str(tiny_vlm_dir))
    cache = tmp_path / "cache"
    by_last = train.bag_features(rec, create_extractor(base), cache, key)
    by_mean = train.bag_features(rec, create_extractor(mean_text), cache, train.vlm_key(mean_text, tiny_vlm_dir))
    assert len(list(cache.rglob("*.npy"))) == 2 and not np.allclose(by_last, by_mean)
    direct = create_extractor(mean_text).extract([rec.images[1][1]], "go to the red cylinder")[0]
    np.testing.assert_allclose(by_mean[1], direct, atol=1e-6)  # computed by the pooling asked for
    np.testing.assert_array_equal(train.bag_features(rec, None, cache, key), by_last)  # served, not run


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


def test_sim_expert_labels_train_on_record_sim_bags(sim_bags, tiny_vlm_dir, tmp_path):
    out = tmp_path / "informed"
    assert train.main(train_args(sim_bags, tiny_vlm_dir, out, tmp_path / "cache", "--epochs", "2",
                                 "--staleness", "0,3.5", "--labels", "sim-expert", "--sensor-dropout", "0.5",
                                 "--turn-augment", "0.5", "--loss", "l1", "--sensor-noise", "1")) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["labels"] == "sim-expert" and report["best_val_mae_chunk"] < report["val_zero_action_mae"]
    assert report["loss"] == "l1"
    assert report["turn_augment"] == {"fraction": 0.5, "range_rad": [-1.0, 1.0], "max_age_s": None}
    # the sim IMU's noise (SimConfig: gyro 0.004 rad/s, accel 0.04 m/s^2), read back from the bags' streams:
    # on the channels a flat-ground base leaves at rest (roll and pitch rates, lateral and vertical
    # acceleration) the noise alone; yaw rate and forward acceleration also step with the commands
    from mobile_vla_ros.sim.world import SimConfig

    noise = report["sensor_noise"]
    assert noise["scale"] == 1.0
    expected = SimConfig().imu_noise
    got = np.asarray(noise["channel_noise_std"])
    assert np.allclose(got[[0, 1, 4, 5]], expected[[0, 1, 4, 5]], rtol=0.1), noise
    assert np.all(got >= 0.9 * expected) and np.all(got < 2 * expected), noise
    notes = ModelSpec.load(out).notes
    assert "sim-expert labels, l1 loss" in notes and "0.5 of them turned by -1 to 1 rad" in notes
    assert "fresh sensor noise x1" in notes


def test_a_geometry_head_model_trains_exports_and_runs_with_three_inputs(sim_bags, tiny_vlm_dir, tmp_path):
    """`--geometry-head`: model.yaml records it, the exported graph keeps the three named inputs and
    one output and matches PyTorch (checked by the export), and the core runs it like any model."""
    spec, report = _train_head_variant(sim_bags, tiny_vlm_dir, tmp_path, "--geometry-head")
    assert spec.architecture.get("geometry_head") is True and report["geometry_head"] is True
    last = report["history"][-1]
    assert 0.5 < last["geometry_in_view_accuracy"] <= 1.0 and last["geometry_position_error_m_p50"] < 4.0


def _train_head_variant(sim_bags, tiny_vlm_dir, tmp_path, flag: str) -> tuple[ModelSpec, dict]:
    """Train 2 epochs with sim-expert labels and `flag`; check what every head variant must keep: better
    than the zero action, the three named inputs and one output of the exported graph, which matches
    PyTorch. -> (model.yaml, train_report.json)."""
    import onnxruntime as ort

    out = tmp_path / flag.strip("-")
    assert train.main(train_args(sim_bags, tiny_vlm_dir, out, tmp_path / "cache", "--epochs", "2",
                                 "--staleness", "0,3.5", "--labels", "sim-expert", flag)) == 0
    spec = ModelSpec.load(out)
    report = json.loads((out / "train_report.json").read_text())
    assert spec.motion_input and report["best_val_mae_chunk"] < report["val_zero_action_mae"]
    session = ort.InferenceSession(str(out / "action_expert.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [INPUT_FEATURES, INPUT_SENSOR, spec.motion_input]
    assert len(session.get_outputs()) == 1 and report["onnx_max_abs_error"] < 1e-4
    return spec, report


def test_a_geometry_head_needs_ground_truth_and_the_motion_input(sim_bags, tiny_vlm_dir, tmp_path, capsys):
    from mobile_vla_ros.models.action_expert import ActionExpertConfig, build_action_expert

    with pytest.raises(ValueError, match="geometry_head needs the motion input"):
        build_action_expert(ActionExpertConfig(geometry_head=True))
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "m", tmp_path / "cache",
                                 "--geometry-head")) != 0
    assert "--geometry-head" in capsys.readouterr().err


def test_a_mode_gate_model_takes_the_chunk_of_the_head_its_gate_picks():
    """`mode_gate`: the chunk is the steer head's where the gate says the image shows the target, the
    search head's elsewhere -- never a mixture of the two."""
    import torch

    from mobile_vla_ros.models.action_expert import ActionExpertConfig, build_action_expert

    torch.manual_seed(0)
    model = build_action_expert(ActionExpertConfig(hidden_dim=32, motion_dim=4, mode_gate=True)).eval()
    features, window, motion = torch.randn(64, 64), torch.randn(64, 65, 6), torch.randn(64, 4)
    with torch.no_grad():
        steer, search, gate, _ = model(features, window, motion, return_modes=True)
        chunk = model(features, window, motion)
    assert (gate > 0).any() and (gate <= 0).any()  # both branches occur: the check below sees both
    picked = torch.where((gate > 0)[:, None, None], steer, search)
    assert torch.equal(chunk, picked) and not torch.allclose(steer, search)
    with pytest.raises(ValueError, match="no mode_gate"):
        build_action_expert(ActionExpertConfig(hidden_dim=32, motion_dim=4))(features, window, motion,
                                                                               return_modes=True)


def test_the_mode_gate_loss_trains_each_head_on_its_branch_only():
    """A steer head's error on a search sample (and the reverse) costs nothing: each head learns its
    branch's labels, not their mean; the gate learns the branch."""
    import torch

    from mobile_vla_ros.models.action_expert import mode_gate_loss

    target = torch.tensor([[[1.0]], [[-1.0]]])  # sample 0 steers (in view), sample 1 searches
    in_view = torch.tensor([1.0, 0.0])
    sure = torch.tensor([20.0, -20.0])  # the gate's logits: right and confident
    right_heads = mode_gate_loss(torch.tensor([[[1.0]], [[5.0]]]), torch.tensor([[[7.0]], [[-1.0]]]), sure,
                                 in_view, target, torch.nn.functional.mse_loss)
    assert float(right_heads) < 1e-6
    wrong_steer = mode_gate_loss(torch.tensor([[[0.0]], [[5.0]]]), torch.tensor([[[7.0]], [[-1.0]]]), sure,
                                 in_view, target, torch.nn.functional.mse_loss)
    assert float(wrong_steer) == pytest.approx(0.5)  # (1 - 0)^2 on one of two samples
    unsure = mode_gate_loss(torch.tensor([[[1.0]], [[5.0]]]), torch.tensor([[[7.0]], [[-1.0]]]), -sure,
                            in_view, target, torch.nn.functional.mse_loss)
    assert float(unsure) > 10  # a gate that picks the wrong branch is what is penalised


def test_a_mode_gate_model_trains_exports_and_needs_ground_truth(sim_bags, tiny_vlm_dir, tmp_path, capsys):
    """`--mode-gate`: model.yaml records it, validation reports how often the gate picks the branch of
    the labels, the exported graph keeps the inputs and one output and matches PyTorch (checked by the
    export), and without the simulator's ground truth it is refused by name."""
    spec, report = _train_head_variant(sim_bags, tiny_vlm_dir, tmp_path, "--mode-gate")
    assert spec.architecture.get("mode_gate") is True and report["mode_gate"] is True
    assert 0.5 < report["history"][-1]["gate_in_view_accuracy"] <= 1.0
    assert "mode gate" in spec.notes
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "m", tmp_path / "cache", "--mode-gate")) != 0
    assert "--mode-gate" in capsys.readouterr().err


def test_sensor_dropout_replaces_whole_windows_by_the_mean():
    import torch

    windows = torch.arange(3 * 4 * 2, dtype=torch.float32).reshape(3, 4, 2)
    mean = torch.tensor([-1.0, -2.0])
    out = train.drop_windows(windows, np.array([False, True, False]), mean)
    assert torch.equal(out[0], windows[0]) and torch.equal(out[2], windows[2])
    assert torch.equal(out[1], mean.expand(4, 2))
    with pytest.raises(ValueError, match=r"--sensor-dropout: expected a fraction in \[0, 1\], got 1.5"):
        train._check_args(train._parser().parse_args(["--bags", "b", "--out", "o", "--sensor-dropout", "1.5"]),
                          train.init_distributed())


def test_sensor_noise_is_estimated_from_the_stream_and_drawn_anew_per_batch():
    rng = np.random.default_rng(0)
    t = np.arange(20000) / 650.0
    sigma = np.array([0.004, 0.04])
    # a slow signal (a turn, an acceleration) with white noise on top: the estimate sees the noise only
    stream = np.stack([0.5 * np.sin(t), 2.0 * np.cos(0.3 * t)], axis=1) + rng.standard_normal((len(t), 2)) * sigma
    assert np.allclose(train.sensor_noise_level(stream), sigma, rtol=0.05)
    rng = np.random.default_rng(1)
    first, second = (train.sensor_noise(rng, 512, 65, sigma.astype(np.float32)) for _ in range(2))
    assert first.shape == (512, 65, 2) and np.allclose(first.std(axis=(0, 1)), sigma, rtol=0.05)
    assert not np.array_equal(first, second)  # a new draw for every batch
    with pytest.raises(ValueError, match=r"--sensor-noise: expected a scale >= 0, got -1"):
        train._check_args(train._parser().parse_args(["--bags", "b", "--out", "o", "--sensor-noise", "-1"]),
                          train.init_distributed())


def test_two_process_ddp_trains_the_same_model_as_one(sim_bags, tiny_vlm_dir, tmp_path):
    """Also with the random augmentations of the windows: each rank takes its slice of draws made for the
    whole batch."""
    common = ["--epochs", "3", "--staleness", "fresh", "--sensor-noise", "1", "--sensor-dropout", "0.2"]
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "one", tmp_path / "cache", *common)) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))  # torchrun leaves a torchelastic_* dir there
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port",
                           str(29500 + os.getpid() % 1000), "-m", "mobile_vla_ros.tools.training.train",
                           *train_args(sim_bags, tiny_vlm_dir, tmp_path / "two", tmp_path / "cache", *common)],
                          capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    one = json.loads((tmp_path / "one" / "train_report.json").read_text())
    two = json.loads((tmp_path / "two" / "train_report.json").read_text())
    for a, b in zip(one["history"], two["history"]):
        assert b["mae_chunk"] == pytest.approx(a["mae_chunk"], rel=0.02, abs=2e-3)


def chunk_from_the_action_core(model_dir, spec: ModelSpec, sample: list[float]):
    """The chunk the node's action core (ONNX Runtime) makes of `model_dir` from zero features and 70
    identical sensor samples, or None."""
    from mobile_vla_ros.core.action_pipeline import ActionExpertCore

    core = ActionExpertCore(spec, create_backend("onnxruntime", model_dir, spec, None), 2.0, 0.05)
    core.on_instruction("go", now=100.0)
    core.on_features(np.zeros((1, spec.feature_dim), np.float32), source_stamp=100.0, now=100.0)
    for j in range(70):
        t = 100.0 + j / 650
        core.on_sensor(t, sample, now=t)
    return core.tick(100.0 + 69 / 650).chunk


def test_a_wrench_model_is_trained_from_wrench_bags_and_runs_in_the_core(tiny_vlm_dir, tmp_path):
    """The sensor type follows the bag (WrenchStamped on /sensor): model.yaml says wrench and the
    action core the node runs takes wrench windows."""
    for i in range(3):
        write_episode_bag(tmp_path / "bags" / f"w{i}", seconds=3.0, seed=i, sensor="wrench")
    out = tmp_path / "wrench_model"
    assert train.main(train_args(tmp_path / "bags", tiny_vlm_dir, out, tmp_path / "cache", "--epochs", "1")) == 0
    spec = ModelSpec.load(out)
    assert spec.sensor_type == "wrench" and spec.motion_input is not None
    assert chunk_from_the_action_core(out, spec, [0.0, 0.0, -20.0, 0.0, 0.0, 0.1]) is not None


def test_bad_bags_stop_with_one_line(tmp_path, tiny_vlm_dir, capsys):
    """The installed command once (exit code 2, one line, no traceback), then the same `main` in this
    process for each kind of bad bag."""
    from mobile_vla_ros.tools.training import train

    common = ["--out", str(tmp_path / "m"), "--vlm-model-path", str(tiny_vlm_dir)]
    proc = subprocess.run([sys.executable, "-m", "mobile_vla_ros.tools.training.train", *common,
                           "--bags", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("missing: no such bag or directory")

    def run(*args):
        capsys.readouterr()
        assert train.main([*common, *args]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("mobile-vla-train: error: "), last
        return last

    no_instruction = [write_episode_bag(tmp_path / f"b{i}", instruction=None) for i in range(2)]
    assert "no instruction" in run("--bags", *map(str, no_instruction))
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metadata.yaml").write_text("not: a bag")
    assert "cannot be read" in run("--bags", str(tmp_path / "broken"), str(no_instruction[0]))
    robot_bags = [write_episode_bag(tmp_path / f"r{i}") for i in range(2)]  # a robot's bags: no ground truth
    assert "--labels sim-expert needs the simulator's ground truth (/sim/ground_truth_pose, /sim/task)" in run(
        "--bags", *map(str, robot_bags), "--labels", "sim-expert")


def test_the_default_model_recipe_records_informed_episodes_only_for_the_task_sets_asked():
    """make_default_model: the shipped recipe records the standard set with the delayed memory expert and
    the hard set with both drivers (the informed ones on their own seeds); `--informed-task-sets hard`
    drives the hard training episodes with the image-informed rule only, `--also-informed-task-sets ''`
    with the memory expert only; validation stays as it was; an unknown task set stops at parsing, and so
    does one task set given to both flags."""
    shipped = recipe._parse([])
    informed = recipe._parse(["--informed-task-sets", "hard"])
    memory_only = recipe._parse(["--also-informed-task-sets", ""])
    assert [recipe._training_drivers(t, shipped) for t in ("standard", "hard")] == [("memory",), ("memory", "informed")]
    assert [recipe._training_drivers(t, informed) for t in ("standard", "hard")] == [("memory",), ("informed",)]
    assert [recipe._training_drivers(t, memory_only) for t in ("standard", "hard")] == [("memory",), ("memory",)]
    memory = recipe._record_args("train", "memory", shipped)
    assert "--expert-delay-max" in memory and "--informed-latency-max" not in memory
    assert memory[memory.index("--seed") + 1] == "0"
    hard = recipe._record_args("train", "informed", informed)
    assert hard[hard.index("--informed-latency-max") + 1] == "1.5" and "--expert-delay-max" not in hard
    assert hard[hard.index("--seed") + 1] == str(recipe.INFORMED_SEED)
    assert recipe._record_args("val", "informed", informed) == recipe._record_args("val", "memory", shipped)
    with pytest.raises(SystemExit):
        recipe._parse(["--informed-task-sets", "hard,maze"])
    with pytest.raises(SystemExit):
        recipe.main(["--informed-task-sets", "hard", "--also-informed-task-sets", "standard,hard"])


def test_the_default_model_command_runs_end_to_end_at_a_tiny_scale(tmp_path, capsys):
    """The one command that produces models/default, every step at a tiny scale (a 32-dim stand-in
    grounded one epoch on 4 tasks, two episodes a recording, views of 4 more scenes, one epoch a model),
    otherwise its defaults: the stand-in grounded as shipped (full resampler attention) is what both models
    carry, the hard set is recorded by both drivers on their own seeds, the model has the motion input and
    the geometry head and the ablation neither, both are trained with the shipped (MSE) loss and scene views,
    and each runs in the action core the node runs."""
    from mobile_vla_ros.vlm.kosmos2 import RESAMPLER_CAUSAL_KEY

    out, ablation, work = tmp_path / "default", tmp_path / "no_motion", tmp_path / "work"
    assert recipe.main(["--out", str(out), "--no-motion-out", str(ablation), "--work", str(work),
                        "--episodes", "2", "--val-episodes", "1", "--grounding-tasks", "4", "--grounding-epochs", "1",
                        "--vlm-size", "32x1x32x8", "--epochs", "1", "--scene-tasks", "4"]) == 0
    assert "6 training bags" in capsys.readouterr().out  # standard, hard and hard informed: two each
    seeds = {name: sorted(json.loads((work / name / "episodes.json").read_text()))
             for name in ("train_standard", "train_hard", "train_hard_informed", "val_hard")}
    assert seeds == {"train_standard": ["0", "1"], "train_hard": ["0", "1"],
                     "train_hard_informed": [str(recipe.INFORMED_SEED), str(recipe.INFORMED_SEED + 1)],
                     "val_hard": [str(recipe.VAL_SEED)]}
    vlm_config = json.loads((out / "vlm" / "config.json").read_text())
    assert not vlm_config.get(RESAMPLER_CAUSAL_KEY, False)
    assert (out / "vlm" / "model.safetensors").read_bytes() == (ablation / "vlm" / "model.safetensors").read_bytes()
    for model_dir, motion in ((out, True), (ablation, False)):
        spec = ModelSpec.load(model_dir)
        assert spec.feature_dim == 32 and (spec.motion_input is not None) == motion
        report = json.loads((model_dir / "train_report.json").read_text())
        assert report["loss"] == "mse" and report["sensor_noise"]["scale"] == 0.0  # both, as shipped
        assert report["scene_samples"]["tasks"] == 4 and report["geometry_head"] is motion
        assert chunk_from_the_action_core(model_dir, spec, [0.0, 0.0, 9.81, 0.0, 0.0, 0.0]) is not None


def test_the_default_model_recipe_grounds_the_stand_in_it_is_asked_for():
    """make_default_model: by default the shipped action-expert recipe (10 epochs, scene views of 3,500
    tasks, the geometry head) and the shipped stand-in (full resampler attention, labels per colour and
    shape, twin pairs in view, other pairs, grounding seed 2); the flags give the recipes shipped before."""
    from mobile_vla_ros.vlm.grounding import GroundingRecipe, StandInSize

    shipped = recipe._parse([])
    assert (shipped.epochs, shipped.scene_tasks, shipped.scene_fraction, shipped.geometry_head) == \
        (10, 3500, 0.25, True)
    assert recipe._stand_in(shipped) == {"size": StandInSize(resampler_causal=False),
                                         "recipe": GroundingRecipe(shape_slots=True, twin_pairs="in-view",
                                                                   other_pairs=True)}
    assert shipped.vlm_seed == 2 and shipped.seed == 0
    assert recipe._stand_in(recipe._parse(["--no-vlm-other-pairs"]))["recipe"] == GroundingRecipe(
        shape_slots=True, twin_pairs="in-view")
    before = recipe._stand_in(recipe._parse(["--no-vlm-full-resampler", "--no-vlm-shape-slots",
                                             "--vlm-twin-pairs", "none", "--no-vlm-other-pairs"]))
    assert before == {"size": StandInSize(), "recipe": GroundingRecipe()}
    assert recipe._stand_in(recipe._parse(["--vlm-axis-views"]))["recipe"] == GroundingRecipe(
        shape_slots=True, twin_pairs="in-view", axis_views=True, other_pairs=True)
    with pytest.raises(SystemExit):
        recipe._parse(["--vlm-twin-pairs", "some"])
