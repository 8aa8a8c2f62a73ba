"""Scene samples (mobile-vla-train --scene-tasks): a rendered view's features in place of a training sample's,
labelled from where the robot that took the view has moved since."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from test_train import train_args

from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.sim.expert_labels import informed_chunks, target_in_view
from mobile_vla_ros.sim.world import SimConfig, SimRobot, sample_task
from mobile_vla_ros.tools.training import train
from mobile_vla_ros.tools.training.scene_samples import SCENE_SEED, VIEWS_PER_TASK, SceneSamples, scene_samples
from mobile_vla_ros.vlm.grounding import grounding_label, render_frames


def test_a_views_label_is_the_experts_from_the_world_pose_the_motion_input_leads_to():
    """From a grounding label alone (bearing, distance to the surface) and the motion since the view in the
    body frame at the view, the labels equal the expert's from the world pose and target: the target rebuilt
    in the view's frame, its radius, and the motion's frame must all be right."""
    task = sample_task(1003, SimConfig.for_evaluation("standard"))
    target = task.target_object
    world_target = np.array([[target.x, target.y, target.radius]])
    motions = np.array([[0.5, 0.0, 0.0, 0.0], [1.0, 0.3, -0.1, 0.4], [2.0, 0.6, 0.2, -0.9], [3.0, 0.1, 0.0, 2.5]])
    with SimRobot(task) as robot:
        for yaw_offset in (-0.5, 0.3, 2.0):  # target to the right, to the left, behind (not in view)
            x, y = task.start[0] + 0.4, task.start[1] - 0.2
            yaw = math.atan2(target.y - y, target.x - x) + yaw_offset
            robot.place(x, y, yaw)
            label = grounding_label(robot)[None, :3]
            scenes = SceneSamples.from_labels(np.zeros((1, 4)), label)
            views = np.zeros(len(motions), dtype=int)
            got = scenes.labels(views, motions, 8, 0.0125, ["linear.x", "angular.z"])
            c, s = math.cos(yaw), math.sin(yaw)
            world = np.stack([x + c * motions[:, 1] - s * motions[:, 2], y + s * motions[:, 1] + c * motions[:, 2],
                              yaw + motions[:, 3]], axis=1)
            shown = bool(target_in_view(x, y, yaw, world_target[0]))
            expected = informed_chunks(world, np.repeat(world_target, len(motions), 0), np.full(len(motions), shown),
                                       np.full(len(motions), yaw), 8, 0.0125)
            np.testing.assert_allclose(got, expected, atol=1e-5)
            assert bool(scenes.shows_target(np.array([0]))[0]) == shown == (yaw_offset != 2.0)
            np.testing.assert_allclose(scenes.geometry(np.array([0]))[0, 0], float(shown))
    swapped = scenes.labels(views, motions, 8, 0.0125, ["angular.z", "linear.x"])
    np.testing.assert_array_equal(swapped, got[..., ::-1])  # columns follow --twist-mapping


def test_scene_features_are_the_extractors_on_each_view_rendered_in_blocks_and_cached(tiny_vlm_dir, tmp_path):
    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    extractor = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(tiny_vlm_dir), device="cpu",
                                                 dtype="fp32"))
    scenes = scene_samples(extractor, "k", 3, tmp_path, block=2)  # blocks of 2 tasks: [0, 1], [2]
    frames = render_frames(3, VIEWS_PER_TASK, SCENE_SEED)
    assert len(scenes) == len(frames) == 3 * VIEWS_PER_TASK
    for i in (0, 2 * VIEWS_PER_TASK + 1):  # a view of the first block and one of the second
        rgb, text, label, *_ = frames[i]
        np.testing.assert_allclose(scenes.features[i], extractor.extract([rgb], text)[0], atol=1e-5)
        bearing = math.atan2(scenes.target[i, 1], scenes.target[i, 0])
        assert bearing == pytest.approx(math.atan2(label[0], label[1]), abs=1e-5)
    cached = list((tmp_path / "k").glob("scenes_*.npz"))
    assert len(cached) == 1
    np.testing.assert_array_equal(scene_samples(None, "k", 3, tmp_path).features, scenes.features)  # no extractor


def test_training_with_scene_views_records_them_and_needs_ground_truth(sim_bags, tiny_vlm_dir, tmp_path, capsys):
    out = tmp_path / "scenes"
    assert train.main(train_args(sim_bags, tiny_vlm_dir, out, tmp_path / "cache", "--epochs", "2",
                                 "--staleness", "0,3.5", "--labels", "sim-expert", "--scene-tasks", "2",
                                 "--scene-fraction", "0.5")) == 0
    report = json.loads((out / "train_report.json").read_text())
    assert report["scene_samples"] == {"tasks": 2, "views_per_task": VIEWS_PER_TASK, "render_seed": SCENE_SEED,
                                       "fraction": 0.5}
    assert report["best_val_mae_chunk"] < report["val_zero_action_mae"]
    assert "0.5 of each batch with views of 2 rendered tasks" in ModelSpec.load(out).notes
    assert "16 scene views of 2 tasks" in capsys.readouterr().out
    # the ablation without the motion input trains on them too: their labels follow the motion it is not given
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "nm", tmp_path / "cache", "--epochs", "1",
                                 "--labels", "sim-expert", "--no-motion-input", "--scene-tasks", "2")) == 0
    assert json.loads((tmp_path / "nm" / "train_report.json").read_text())["scene_samples"]["tasks"] == 2
    assert train.main(train_args(sim_bags, tiny_vlm_dir, tmp_path / "m", tmp_path / "cache",
                                 "--scene-tasks", "2")) != 0  # recorded labels
    assert "--scene-tasks" in capsys.readouterr().err


def test_scene_rows_take_the_views_features_and_labels_and_keep_the_rest(sim_bags, tiny_vlm_dir, tmp_path):
    """Trainer._scene_rows: the chosen rows get the view's features and the label from their motion since
    the image; the other rows and the sensor windows and motion inputs stay as drawn."""
    import torch

    trainer = _trainer(sim_bags, tiny_vlm_dir, tmp_path)
    samples = np.arange(0, 40, 5)
    inputs, y, images = trainer._batch(trainer.train, samples, np.full(len(samples), 1.0))
    before = [x.clone() for x in inputs], y.clone()
    rows, views = np.array([1, 4]), np.array([3, 0])
    motion = trainer.train.motion(samples[rows], images[rows])
    np.testing.assert_array_equal(motion, inputs[2][rows].numpy())  # what the model is given for these rows
    trainer._scene_rows(inputs, y, None, rows, views, motion)
    kept = np.setdiff1d(np.arange(len(samples)), rows)
    assert torch.equal(inputs[0][kept], before[0][0][kept]) and torch.equal(y[kept], before[1][kept])
    assert torch.equal(inputs[1], before[0][1]) and torch.equal(inputs[2], before[0][2])
    np.testing.assert_array_equal(inputs[0][rows].numpy(), trainer.scenes.features[views])
    expected = trainer.scenes.labels(views, motion, trainer.spec.chunk_size,
                                     trainer.spec.action_dt, ["linear.x", "angular.z"])
    np.testing.assert_array_equal(y[rows].numpy(), expected)


def _trainer(sim_bags, tiny_vlm_dir, tmp_path) -> train.Trainer:
    """A Trainer on the sim bags with random scene views (no rendering: _scene_rows only reads them)."""
    args = train._parser().parse_args(train_args(sim_bags, tiny_vlm_dir, tmp_path / "m", tmp_path / "cache",
                                                 "--labels", "sim-expert", "--staleness", "0,3.5"))
    extractor, key = train._extractor(args, tiny_vlm_dir)
    dist = train.Distributed()
    spec = train._initial_spec(args, extractor.feature_dim, "imu", (0.0, 3.5))
    data = train._dataset(args, train.find_bags([sim_bags]), "train", spec, extractor, key, dist)
    spec.normalization = train._normalization(data, spec, (0.0, 3.5), 0)
    rng = np.random.default_rng(0)
    scenes = SceneSamples.from_labels(rng.normal(size=(5, extractor.feature_dim)),
                                      np.concatenate([rng.normal(size=(5, 2)), rng.uniform(0.5, 3, (5, 1))], 1))
    return train.Trainer(args, spec, data, data, dist, scenes)
