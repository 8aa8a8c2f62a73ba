"""The shape probe of a stand-in VLM's vision tokens (vlm/shape_probe.py), the labels it reads
(vlm/patch_labels.py) and the shape stage that trains the tower on them (vlm/shape_stage.py)."""

from __future__ import annotations

import json

import numpy as np

from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.world import SimConfig, sample_task
from mobile_vla_ros.vlm import patch_labels, shape_probe


def test_patch_shapes_label_the_patches_an_object_covers():
    task = sample_task(shape_probe.FIRST_SCENE_SEED, SimConfig(task_set="hard"))
    objects = np.full((8, 8), -1, dtype=np.int16)  # four 4-pixel patches
    objects[:4, :4] = task.target  # the top-left patch all target
    objects[6:, 6:] = 0 if task.target != 0 else 1  # a quarter of the bottom-right one another object
    labelled = patch_labels.patch_shapes(objects, task, patch=4)
    assert labelled == [(0, task.target_object.shape == "box", task.target)]
    assert [p for p, _, _ in patch_labels.patch_shapes(objects, task, patch=4, min_share=0.2)] == [0, 3]


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


def test_patch_labels_mark_boxes_cylinders_and_empty_patches_with_the_objects_distance():
    frames = patch_labels.render_pair_views(1, 2, 0, shape_probe.FIRST_SCENE_SEED)
    labels, distances = patch_labels.patch_labels(frames, patch=16)
    assert labels.shape == distances.shape == (2, 14 * 14)
    for n, (_, objects, task, x, y) in enumerate(frames):
        for p, box, i in patch_labels.patch_shapes(objects, task, 16):
            assert labels[n, p] == box
            assert abs(distances[n, p] - np.hypot(task.objects[i].x - x, task.objects[i].y - y)) < 1e-4
        assert ((labels[n] >= 0) == (distances[n] > 0)).all() and (labels[n] >= 0).sum() > 0


def test_the_shape_stage_trains_the_tower_to_tell_the_shapes_of_its_views(tmp_path):
    """The stage's loop (labels, mirrored views and their mirrored labels, schedule) fits the shapes of
    the views it trains on, through the tokens the resampler reads, and changes the tower itself."""
    import torch

    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor
    from mobile_vla_ros.vlm.shape_stage import render_shape_views, train_tower_shape
    from mobile_vla_ros.vlm.tiny import build_tiny_kosmos2

    build_tiny_kosmos2(tmp_path, seed=0, trainable=True)
    extractor = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(tmp_path), device="cpu",
                                                 dtype="fp32", cuda_graphs=False))
    train, test = render_shape_views(2, 1, workers=1)
    assert (len(train), len(test)) == (8, 4)
    before = [p.detach().clone() for p in extractor.model.vision_model.parameters()]
    untrained = train_tower_shape(extractor, train, train, steps=1, batch=8, warmup=1, lr=0.0)  # a random head
    trained = train_tower_shape(extractor, train, train, steps=300, batch=8, warmup=20, lr=2e-3)
    assert trained["accuracy"] > 0.9 > untrained["accuracy"] + 0.15, (untrained, trained)
    after = list(extractor.model.vision_model.parameters())
    assert sum(not torch.equal(a, b) for a, b in zip(before, after, strict=True)) == len(before)
