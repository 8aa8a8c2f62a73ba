"""The stand-in VLM's trainable initialisation and grounding pretraining on simulator renders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobile_vla_ros.sim.world import SimRobot, sample_task
from mobile_vla_ros.vlm import grounding


def image_to_text_ratio(model_dir) -> float:
    """Mean |image latent| / mean |token embedding| of a tiny Kosmos-2."""
    import torch

    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    ex = create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(model_dir),
                                          device="cpu", dtype="fp32"))
    with SimRobot(sample_task(0)) as robot:
        inputs = ex.prepare([robot.render()], "go to the red cylinder")
    with torch.no_grad():
        latents = ex.image_latents(inputs["pixel_values"])
        tokens = ex.model.text_model.model.embed_tokens(inputs["input_ids"])
    return float(latents.abs().mean() / tokens.abs().mean())


def test_trainable_init_lets_the_image_reach_the_text_model(tmp_path):
    from mobile_vla_ros.vlm.tiny import build_tiny_kosmos2

    default = image_to_text_ratio(build_tiny_kosmos2(tmp_path / "default", seed=0))
    trainable = image_to_text_ratio(build_tiny_kosmos2(tmp_path / "trainable", seed=0, trainable=True))
    assert default < 0.1  # transformers' init: the image is a whisper next to the text
    assert 0.3 < trainable < 3.0


def test_labels_follow_the_robot_pose():
    task = sample_task(4)
    with SimRobot(task, render=False) as robot:
        label = grounding.grounding_label(robot)
        assert math.atan2(label[0], label[1]) == pytest.approx(robot.target_bearing(), abs=1e-5)
        assert label[2] == pytest.approx(robot.target_distance(), abs=1e-5)
        visible = label[3::3]
        assert visible.sum() == len(task.objects)  # all objects start in view
        x, y, yaw = task.start
        robot.data.qpos[:] = (x, y, yaw + math.pi)  # facing away: nothing visible
        robot._mj.mj_forward(robot.model, robot.data)
        assert grounding.grounding_label(robot)[3::3].sum() == 0


def test_grounding_pretraining_runs_and_saves_a_loadable_kosmos2(tmp_path):
    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    frames = grounding.render_frames(6, 2, seed=0, workers=2)
    serial = grounding.render_frames(6, 2, seed=0)  # parallel rendering gives the same frames in the same order
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(frames, serial, strict=True))
    metrics = grounding.build_grounded_vlm(tmp_path / "vlm", tasks=8, epochs=2, per_task=2, batch=4, log=lambda _: None)
    assert set(metrics) >= {"bearing_mae_deg", "distance_mae_m"} and np.isfinite(metrics["bearing_mae_deg"])
    ex = create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(tmp_path / "vlm"),
                                          device="cpu", dtype="fp32"))
    with SimRobot(sample_task(1)) as robot:
        features = ex.extract([robot.render()], sample_task(1).instruction)
    assert features.shape == (1, 64) and np.isfinite(features).all()
