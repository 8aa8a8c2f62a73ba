"""The binding probe: the pooled feature's reading of the instructed target against the image latents'
reading of the instructed kind's slot, on the standard set's start images."""

from __future__ import annotations

import json
import math

import numpy as np

from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.world import SimConfig, bearing_and_distance, sample_task
from mobile_vla_ros.vlm import binding_probe
from mobile_vla_ros.vlm.grounding import KINDS


def test_the_instructed_slot_of_a_true_label_is_the_targets_bearing_and_another_kind_is_not():
    for _, _, label, task in binding_probe.start_frames(range(1000, 1006)):
        target = task.target_object
        truth = float(bearing_and_distance(*task.start, np.array([target.x, target.y, target.radius]))[0])
        assert math.isclose(binding_probe.instructed_slot_bearing(label[3:], task), truth, abs_tol=1e-5)
        other = next(o for o in task.objects if o is not target)
        ki = KINDS.index((other.color, other.shape))
        moved = label[3:].copy()
        moved[3 * KINDS.index((target.color, target.shape)):][:3] = 0.0  # the target's kind not in view
        assert math.isnan(binding_probe.instructed_slot_bearing(moved, task))
        assert moved[3 * ki] == 1.0  # the other object's slot says it is in view: not read for this task


def test_the_probe_scores_both_readings_on_every_start_image(tmp_path, capsys):
    out = tmp_path / "binding.json"
    vlm = default_model_dir() / "vlm"
    # 32 tasks: 128 frames to fit on, more than the feature's 64 dimensions (see test_twin_probe)
    assert binding_probe.main(["--vlm", str(vlm), "--tasks", "32", "--seeds", "1000-1007", "--workers", "2",
                               "--out", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    assert result["frames"] == 8 and [row["seed"] for row in result["per_seed"]] == list(range(1000, 1008))
    for row in result["per_seed"]:
        task = sample_task(row["seed"], SimConfig.for_evaluation("standard"))
        target = task.target_object
        truth = bearing_and_distance(*task.start, np.array([target.x, target.y, target.radius]))[0]
        assert math.isclose(row["target_deg"], math.degrees(truth), abs_tol=1e-3)
    for name in ("pooled", "instructed_slot"):
        scores = result[name]
        assert 0.0 <= scores["over_15_deg"] <= 1.0 and 0.0 <= scores["aside"]["side_right"] <= 1.0
        aside = [row for row in result["per_seed"] if abs(row["target_deg"]) > 15]
        assert scores["aside"]["frames"] == len(aside)
    printed = capsys.readouterr().out
    assert f"| {vlm} | pooled | {result['pooled']['bearing_mae_deg']:.1f}° |" in printed
    assert f"| {vlm} | instructed slot | {result['instructed_slot']['bearing_mae_deg']:.1f}° |" in printed


def test_the_pooled_reading_is_the_feature_the_vlm_node_publishes():
    """feature_pairs prepares each frame once for both readouts; its pooled feature is extract()'s."""
    from mobile_vla_ros.vlm.grounding import load_stand_in

    vlm = default_model_dir() / "vlm"
    frames = binding_probe.start_frames([1000, 1001])
    pooled, latents = binding_probe.feature_pairs(vlm, frames)
    extractor = load_stand_in(vlm)
    published = np.concatenate([extractor.extract([rgb], instruction) for rgb, instruction, *_ in frames])
    assert pooled.shape == published.shape and np.allclose(pooled, published, atol=1e-6)
    assert latents.shape[0] == len(frames) and np.all(np.isfinite(latents))
