"""The shape probe of a stand-in VLM's vision tokens (vlm/shape_probe.py)."""

from __future__ import annotations

import json

import numpy as np

from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.world import SimConfig, sample_task
from mobile_vla_ros.vlm import shape_probe


def test_patch_shapes_label_the_patches_an_object_covers():
    task = sample_task(shape_probe.FIRST_SCENE_SEED, SimConfig(task_set="hard"))
    objects = np.full((8, 8), -1, dtype=np.int16)  # four 4-pixel patches
    objects[:4, :4] = task.target  # the top-left patch all target
    objects[6:, 6:] = 0 if task.target != 0 else 1  # a quarter of the bottom-right one another object
    labelled = shape_probe.patch_shapes(objects, task, patch=4)
    assert labelled == [(0, task.target_object.shape == "box", task.target)]
    assert [p for p, _, _ in shape_probe.patch_shapes(objects, task, patch=4, min_share=0.2)] == [0, 3]


def test_fit_probe_learns_a_separable_shape_and_not_noise():
    rng = np.random.default_rng(0)
    y = rng.random(600) < 0.5
    informative = y[:, None] * 2.0 + rng.normal(0, 0.3, (600, 8))
    noise = rng.normal(0, 1, (600, 8))
    assert (shape_probe.fit_probe(informative[:400], y[:400], informative[400:], epochs=20) == y[400:]).mean() > 0.95
    assert (shape_probe.fit_probe(noise[:400], y[:400], noise[400:], epochs=20) == y[400:]).mean() < 0.7


def test_the_probe_reports_every_input_of_the_shipped_stand_in(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert shape_probe.main(["--vlm", str(default_model_dir() / "vlm"), "--scenes", "6", "--views", "2",
                             "--epochs", "2", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    names = ["raw pixels", "patch embedding", "vision layer 1", "vision layer 2"]  # the stand-in has 2 layers
    assert list(result["accuracy"]) == names and result["test_patches"] > 0 and result["train_patches"] > 0
    assert all(0.0 <= result["accuracy"][n] <= 1.0 for n in names)
    printed = capsys.readouterr().out
    assert "| vision layer 2 |" in printed and f"{result['test_patches']} held-out patches" in printed
