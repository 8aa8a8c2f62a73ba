"""The stand-in VLM's trainable initialisation and grounding pretraining on simulator renders."""

from __future__ import annotations

import math
from dataclasses import asdict

import numpy as np
import pytest

from mobile_vla_ros.sim.world import SimConfig, SimRobot, sample_task
from mobile_vla_ros.vlm import grounding


def _extractor(model_dir):
    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    return create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(model_dir),
                                            device="cpu", dtype="fp32"))


def image_to_text_ratio(model_dir) -> float:
    """Mean |image latent| / mean |token embedding| of a tiny Kosmos-2."""
    import torch

    ex = _extractor(model_dir)
    with SimRobot(sample_task(0)) as robot:
        inputs = ex.prepare([robot.render()], "go to the red cylinder")
    with torch.no_grad():
        latents = ex.image_latents(inputs["pixel_values"])
        tokens = ex.model.text_model.model.embed_tokens(inputs["input_ids"])
    return float(latents.abs().mean() / tokens.abs().mean())


def test_trainable_init_lets_the_image_reach_the_text_model(tmp_path):
    from mobile_vla_ros.vlm.tiny import build_tiny_kosmos2

    # the stand-in's architecture: its resampler attends causally (README, Models)
    default = image_to_text_ratio(build_tiny_kosmos2(tmp_path / "default", seed=0, resampler_causal=True))
    trainable = image_to_text_ratio(build_tiny_kosmos2(tmp_path / "trainable", seed=0, trainable=True,
                                                       resampler_causal=True))
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
        by_kind = grounding.grounding_label(robot, shape_slots=True)
        assert by_kind.shape == (3 + 3 * len(grounding.KINDS),)
        for obj in task.objects:  # each one in its colour-and-shape slot
            assert by_kind[3 + 3 * grounding.KINDS.index((obj.color, obj.shape))] == 1
        x, y, yaw = task.start
        robot.place(x, y, yaw + math.pi)  # facing away: nothing visible
        assert grounding.grounding_label(robot)[3::3].sum() == 0


def test_the_vlm_is_taught_visible_where_the_action_labels_count_the_target_in_view():
    """The action expert's labels steer to a target in the image and search otherwise; the VLM's
    "visible" reading must switch at the same bearing, or images near the edge carry both labels."""
    from mobile_vla_ros.sim.episode import IN_VIEW
    from mobile_vla_ros.sim.expert_labels import target_in_view

    task = sample_task(4)
    target = task.target_object
    slot = 3 + 3 * grounding.KINDS.index((target.color, target.shape))
    with SimRobot(task, render=False) as robot:
        x, y, _ = task.start
        towards = math.atan2(target.y - y, target.x - x)
        for aside in (IN_VIEW - 0.01, IN_VIEW + 0.01, -IN_VIEW + 0.01, -IN_VIEW - 0.01):
            robot.place(x, y, towards - aside)  # the target `aside` rad to the left
            assert robot.target_bearing() == pytest.approx(aside, abs=1e-6)
            in_view = bool(target_in_view(*robot.pose(), (target.x, target.y, target.radius)))
            assert in_view == (abs(aside) < IN_VIEW)
            assert grounding.grounding_label(robot, shape_slots=True)[slot] == float(in_view)


def test_grounding_pretraining_runs_and_saves_a_loadable_kosmos2(tmp_path):
    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    frames = grounding.render_frames(6, 2, seed=0, workers=2)
    serial = grounding.render_frames(6, 2, seed=0)  # parallel rendering gives the same frames in the same order
    assert all(np.array_equal(a[0], b[0]) and a[1] == b[1] for a, b in zip(frames, serial, strict=True))
    size = grounding.StandInSize.parse("32x1x32x8")
    metrics = grounding.build_grounded_vlm(tmp_path / "vlm", tasks=8, epochs=2, per_task=2, batch=4, size=size,
                                           shape_steps=3, shape_scenes=4, shape_views=4, log=lambda _: None)
    assert set(metrics) >= {"bearing_mae_deg", "distance_mae_m", "twin_confusion", "shape_stage"}
    shape_stage = metrics["shape_stage"]  # the tower first learned shape, on 4 scenes' far views, 1 held out
    assert (shape_stage["steps"], shape_stage["train_views"], shape_stage["test_views"]) == (3, 16, 4)
    assert np.isfinite(metrics["bearing_mae_deg"]) and metrics["size"]["embed_dim"] == 32
    ex = create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(tmp_path / "vlm"),
                                          device="cpu", dtype="fp32"))
    with SimRobot(sample_task(1)) as robot:
        features = ex.extract([robot.render()], sample_task(1).instruction)
    assert features.shape == (1, 32) and np.isfinite(features).all()
    assert ex.model.config.vision_config.patch_size == 32 and ex.image_tokens == 8
    assert ex.model.image_to_text_projection.x_attn.is_causal and metrics["size"]["resampler_causal"]


def test_the_shape_stage_and_the_grounding_run_as_two_steps(tmp_path):
    """`--epochs 0` saves the stand-in after its shape stage; `--init` grounds that one, its size its own."""
    import torch
    from safetensors.torch import load_file

    size = grounding.StandInSize.parse("32x1x32x8")
    shaped = grounding.build_grounded_vlm(tmp_path / "shaped", tasks=0, epochs=0, size=size, shape_steps=2,
                                          shape_scenes=4, shape_views=2, log=lambda _: None)
    assert "bearing_mae_deg" not in shaped and shaped["shape_stage"]["train_views"] == 4 * 2
    copied = grounding.build_grounded_vlm(tmp_path / "copy", tasks=0, epochs=0, init=tmp_path / "shaped",
                                          log=lambda _: None)
    weights = load_file(tmp_path / "shaped" / "model.safetensors")
    assert copied["size"] == shaped["size"] and copied["init"] == str(tmp_path / "shaped")
    copy = load_file(tmp_path / "copy" / "model.safetensors")
    assert weights.keys() == copy.keys() and all(torch.equal(weights[k], copy[k]) for k in weights)
    grounded = grounding.build_grounded_vlm(tmp_path / "grounded", tasks=4, epochs=1, per_task=2, batch=4,
                                            init=tmp_path / "shaped", log=lambda _: None)
    assert np.isfinite(grounded["bearing_mae_deg"]) and grounded["size"] == asdict(size)
    after = load_file(tmp_path / "grounded" / "model.safetensors")
    assert not torch.equal(after["vision_model.model.embeddings.patch_embedding.weight"],
                           weights["vision_model.model.embeddings.patch_embedding.weight"])


def test_one_set_of_renders_grounds_stand_ins_of_another_seed(tmp_path):
    """`render_seed` fixes the rendered tasks and `seed` the initialisation and batch order: a stand-in of
    seed 1 grounded on seed 0's renders is scored on seed 0's validation frames (the same predict-zero
    error) and is another model."""
    from safetensors.torch import load_file

    size = grounding.StandInSize.parse("32x1x32x8")
    runs = {seed: grounding.build_grounded_vlm(tmp_path / str(seed), tasks=4, epochs=1, per_task=2, batch=4, seed=seed,
                                               size=size, render_seed=0, log=lambda _: None) for seed in (0, 1)}
    assert runs[0]["bearing_mae_deg_zero"] == runs[1]["bearing_mae_deg_zero"]
    weights = [load_file(tmp_path / str(seed) / "model.safetensors") for seed in (0, 1)]
    key = "vision_model.model.embeddings.patch_embedding.weight"
    assert not np.array_equal(weights[0][key].numpy(), weights[1][key].numpy())


def test_init_refuses_a_size_or_attention_it_would_not_use(tmp_path, capsys):
    """A saved stand-in is grounded at its own size and resampler attention: `--sizes` or
    `--full-resampler` beside `--init` stop at parsing instead of being ignored."""
    for extra in (["--sizes", "128x4"], ["--full-resampler"]):
        with pytest.raises(SystemExit) as stopped:
            grounding.main(["--out", str(tmp_path / "out"), "--init", str(tmp_path / "saved"), *extra])
        assert stopped.value.code == 2
        assert "leave out --sizes and --full-resampler" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_twin_in_view_is_the_same_colour_other_shape():
    task = next(t for t in (sample_task(s, SimConfig(task_set="hard")) for s in range(50)))
    target = task.target_object
    twin = next(o for o in task.objects if o.color == target.color and o is not target)
    with SimRobot(task, render=False) as robot:
        x, y, _ = task.start
        robot.place(x, y, math.atan2(twin.y - y, twin.x - x))  # looking straight at the twin
        assert grounding.twin_bearing(robot) == pytest.approx(0.0, abs=1e-6)
        robot.place(x, y, math.atan2(twin.y - y, twin.x - x) + math.pi)  # turned away from it
        assert math.isnan(grounding.twin_bearing(robot))


def test_twin_views_look_between_the_target_and_its_twin():
    """With `twin_views`, hard tasks' second frames of each three show the twin far more often."""
    def twin_frames(recipe):
        frames = grounding.render_frames(24, 3, seed=0, recipe=recipe)
        return sum(not math.isnan(f[3]) for f in frames[1::3])  # frames k % 3 == 1

    assert twin_frames(grounding.GroundingRecipe(twin_views=True)) >= twin_frames(grounding.GroundingRecipe()) + 3


def _another_object_on_the_axis(frame, max_bearing: float = 0.1) -> bool:
    """Whether a kind's label (shape slots) shows an object within `max_bearing` rad of the camera axis at
    another bearing than the target's."""
    label = frame[2]
    for visible, sin_bearing, _ in label[3:].reshape(-1, 3):
        if visible and abs(sin_bearing) < math.sin(max_bearing) and abs(sin_bearing - label[0]) > 1e-4:
            return True
    return False


def test_axis_views_look_at_another_object_in_the_standard_tasks_only():
    """With `axis_views`, every standard task's second frame of each three has another object on the
    camera axis; hard tasks' frames and the validation frames stay as they were."""
    per_task = 3
    recipe = grounding.GroundingRecipe(shape_slots=True, axis_views=True)
    axis = grounding.render_frames(8, per_task, seed=0, recipe=recipe)
    plain_recipe = grounding.GroundingRecipe(shape_slots=True)
    plain = grounding.render_frames(8, per_task, seed=0, recipe=plain_recipe)
    tasks = [range(i * per_task, (i + 1) * per_task) for i in range(8)]
    standard = [t for i, t in enumerate(tasks) if not grounding.is_hard_task(i)]
    assert all(_another_object_on_the_axis(axis[t[1]]) for t in standard)
    assert sum(_another_object_on_the_axis(plain[t[1]]) for t in standard) < len(standard)
    for i, t in enumerate(tasks):
        if grounding.is_hard_task(i):
            assert all(np.array_equal(axis[k][0], plain[k][0]) for k in t)
    val_axis = grounding.render_grounding_frames(8, per_task, seed=0, recipe=recipe)[1]
    val_plain = grounding.render_grounding_frames(8, per_task, seed=0, recipe=plain_recipe)[1]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(val_axis, val_plain, strict=True))


def test_twin_pairs_ask_the_same_image_for_the_twin_by_its_shape():
    """With `twin_pairs`, each hard frame is followed by the same image instructed with the other shape
    of the target's colour and labelled for that object; standard frames get no pair."""
    per_task = 6
    plain = grounding.render_frames(4, per_task, seed=0)
    paired = grounding.render_frames(4, per_task, seed=0, recipe=grounding.GroundingRecipe(twin_pairs="all"))
    assert len(paired) == len(plain) + 2 * per_task  # tasks 1 and 3 are hard
    pairs = [(a, b) for a, b in zip(paired, paired[1:]) if a[0] is b[0]]
    assert len(pairs) == 2 * per_task
    twins_seen = 0
    for k, (own, asked) in enumerate(pairs):
        hard_index = 1 + 2 * (k // per_task)  # tasks 1, 3
        task = sample_task(grounding.FIRST_TASK_SEED + hard_index, SimConfig(task_set="hard", paraphrases=True))
        target = task.target_object
        twin = grounding.twin_instructed(task).target_object
        assert (twin.color, twin.shape) != (target.color, target.shape) and twin.color == target.color
        assert own[1] == task.instruction
        assert asked[1] == task.instruction.replace(f"{target.color} {target.shape}", f"{twin.color} {twin.shape}")
        assert np.array_equal(own[2][3:], asked[2][3:])  # one view: the same per-colour labels
        assert abs(asked[2][2] - own[2][2]) > 0.05  # two objects, two distances
        for a, b in ((own, asked), (asked, own)):  # a's twin, when in view, is b's answer
            if not math.isnan(a[3]):
                assert math.atan2(b[2][0], b[2][1]) == pytest.approx(a[3], abs=1e-5)
                twins_seen += 1
    assert twins_seen >= 2
    in_view = grounding.render_frames(4, per_task, seed=0, recipe=grounding.GroundingRecipe(twin_pairs="in-view"))
    asked = [b for a, b in zip(in_view, in_view[1:]) if a[0] is b[0]]
    assert len(in_view) == len(plain) + len(asked)  # only frames whose twin is in view get a pair
    assert len(asked) == sum(not math.isnan(f[3]) for f in plain[per_task:2 * per_task] + plain[3 * per_task:])
    with pytest.raises(ValueError, match="twin_pairs: expected one of"):
        grounding.GroundingRecipe(twin_pairs="yes")


def test_other_pairs_ask_each_standard_image_for_every_other_object_in_view():
    """With `other_pairs`, each standard frame is followed by the same image instructed, in the task's own
    phrasing, with each other object in view and labelled for it; hard frames and validation frames are as
    before."""
    per_task = 6
    plain_recipe = grounding.GroundingRecipe(shape_slots=True)
    plain = grounding.render_frames(4, per_task, seed=0, recipe=plain_recipe)
    recipe = grounding.GroundingRecipe(shape_slots=True, other_pairs=True)
    paired = grounding.render_frames(4, per_task, seed=0, recipe=recipe)
    by_image: dict[int, list] = {}
    for frame in paired:
        by_image.setdefault(id(frame[0]), []).append(frame)
    groups = list(by_image.values())
    assert len(groups) == len(plain) and len(paired) > len(plain) + per_task  # most standard views show others
    for k, (group, alone) in enumerate(zip(groups, plain, strict=True)):
        index = k // per_task
        assert np.array_equal(group[0][0], alone[0]) and group[0][1] == alone[1]
        np.testing.assert_array_equal(group[0][2], alone[2])
        if grounding.is_hard_task(index):
            assert len(group) == 1
            continue
        task = sample_task(grounding.FIRST_TASK_SEED + index, SimConfig(paraphrases=True))
        kinds = alone[2][3:].reshape(-1, 3)
        in_view = [o for o in task.objects if o is not task.target_object
                   and kinds[grounding.KINDS.index((o.color, o.shape)), 0] == 1.0]
        assert [f[1] for f in group[1:]] == [grounding.instructed_for(task, o).instruction for o in in_view]
        for frame, obj in zip(group[1:], in_view):
            np.testing.assert_array_equal(frame[2][3:], alone[2][3:])  # one image: the same per-kind labels
            slot = kinds[grounding.KINDS.index((obj.color, obj.shape))]
            assert frame[2][0] == pytest.approx(slot[1], abs=1e-5)  # its target is that object
            assert frame[1] != alone[1] and obj.color in frame[1]
    assert sum(len(g) > 1 for g in groups) >= per_task
    val = grounding.render_grounding_frames(4, 2, seed=0, recipe=recipe)[1]
    assert len({id(f[0]) for f in val}) == len(val)  # validation asks each image once, as the robot does


def test_instructed_for_keeps_the_phrasing_and_names_the_other_object():
    """A task's instruction re-aimed at another of its objects keeps the template, including the colour-only
    one; an instruction in no known phrasing is refused."""
    from dataclasses import replace

    task = sample_task(1003, SimConfig(paraphrases=True))
    other = next(o for o in task.objects if o is not task.target_object)
    target = task.target_object
    for phrasing in ("approach the {color} object", "target: {color} {shape}", "your goal is the {color} {shape}"):
        asked = replace(task, instruction=phrasing.format(color=target.color, shape=target.shape))
        moved = grounding.instructed_for(asked, other)
        assert moved.instruction == phrasing.format(color=other.color, shape=other.shape)
        assert moved.target_object is other and moved.objects == task.objects
    with pytest.raises(ValueError, match="none of the phrasings"):
        grounding.instructed_for(replace(task, instruction="go somewhere"), other)


def test_twin_confusion_counts_predictions_nearer_the_twin():
    import torch

    predicted = torch.tensor([0.0, 0.5, 1.0, 0.2])
    target = torch.tensor([0.1, 0.0, 3.0, 0.0])
    twins = torch.tensor([0.6, 0.45, math.nan, math.nan])
    metrics = grounding.twin_confusion(predicted, grounding.angle_error(predicted, target), twins)
    assert metrics == {"rate": 0.5, "frames": 2}  # the first is nearer its target, the second its twin


def test_stand_in_size_parses_and_names_itself():
    assert str(grounding.StandInSize.parse("128x4x14x16")) == "128x4x14x16"
    assert grounding.StandInSize.parse("96x3") == grounding.StandInSize(96, 3)
    assert str(grounding.StandInSize(resampler_causal=False)) == "64x2x16x16-full-resampler"
    with pytest.raises(ValueError, match="expected WIDTHxLAYERS"):
        grounding.StandInSize.parse("wide")


def test_render_objects_marks_the_pixels_each_object_covers():
    task = sample_task(1003, SimConfig(task_set="hard"))
    target = task.target_object
    with SimRobot(task) as robot:
        robot.place(target.x - 2.0, target.y, 0.0)  # 2 m short of the target, facing it
        rgb, objects = robot.render(), robot.render_objects()
        assert objects.shape == rgb.shape[:2] and set(np.unique(objects)) >= {-1, task.target}
        assert np.array_equal(robot.render(), rgb)  # the camera is back to colour after the segmentation
        on_target = objects == task.target
        assert on_target[:, 100:124].mean() > 0.1  # straight ahead, in the image's middle columns
        red, green, blue = rgb[on_target].mean(axis=0)
        assert red > 2 * green and red > 2 * blue and target.color == "red"  # the target's own pixels
        assert rgb[objects == -1].mean(axis=0).std() < 10  # the rest is the grey floor and sky
        kinds = grounding.kind_map(robot)
        assert np.array_equal(kinds == 1 + grounding.KINDS.index((target.color, target.shape)), on_target)
        robot.place(target.x - 2.0, target.y, math.pi)  # turned away: the target is out of view
        assert not (robot.render_objects() == task.target).any()


def test_patch_kind_targets_give_each_patch_its_share_of_every_kind():
    import torch

    kinds = torch.zeros(1, 4, 8, dtype=torch.uint8)  # one 4x8 image, two 4-pixel patches
    kinds[0, :, 4:] = 3  # the right patch all kind 3
    kinds[0, :2, :4] = 5  # the left patch half kind 5, half none
    targets = grounding.patch_kind_targets(kinds, 4)
    assert targets.shape == (1, 2, 1 + len(grounding.KINDS))
    assert torch.allclose(targets.sum(-1), torch.ones(1, 2))
    assert targets[0, 0, 5] == 0.5 and targets[0, 0, 0] == 0.5 and targets[0, 1, 3] == 1.0
    logits = torch.full_like(targets, -5.0)
    logits[0, 0, 6] = logits[0, 1, 3] = 5.0  # left: kind 6 (same colour, the other shape); right: right
    accuracy = grounding._patch_kind_accuracy(logits, targets)
    assert accuracy == {"kind": 0.5, "shape": 0.5, "patches": 2}


def test_grounding_with_patch_kinds_trains_a_patch_head_and_reports_it(tmp_path):
    size = grounding.StandInSize.parse("32x1x32x8")
    recipe = grounding.GroundingRecipe(patch_kinds=True)
    frames = grounding.render_frames(4, 2, seed=0, recipe=recipe)
    assert all(f[4].shape == f[0].shape[:2] and f[4].max() > 0 for f in frames[::4])  # every frame has its map
    metrics = grounding.build_grounded_vlm(tmp_path / "vlm", tasks=4, epochs=1, batch=4, size=size, recipe=recipe,
                                           frames=(frames[:6], frames[6:]), log=lambda _: None)
    assert metrics["patch_kinds"]["patches"] > 0 and 0.0 <= metrics["patch_kinds"]["shape"] <= 1.0
    assert metrics["recipe"]["patch_kinds"] and (tmp_path / "vlm" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="every frame has its kind map or none"):
        grounding.Batcher(_extractor(tmp_path / "vlm"), [frames[0], (*frames[1][:4], None)])
