"""The hard task set: targets beside or behind the robot, same-colour distractors of the other shape,
targets up to 4 m, phrasings never used in training; and the expert that searches for unseen targets."""

from __future__ import annotations

import math

import pytest

from mobile_vla_ros.sim.episode import SEARCH_RATE, expert_command_at, run_baseline
from mobile_vla_ros.sim.world import HELD_OUT_PHRASINGS, PHRASINGS, SimConfig, sample_task, wrap_angle

HARD = SimConfig.for_evaluation("hard")


def bearing_and_distance(task, obj):
    x, y, yaw = task.start
    return wrap_angle(math.atan2(obj.y - y, obj.x - x) - yaw), math.hypot(obj.x - x, obj.y - y)


def test_hard_tasks_start_with_the_target_out_of_view_beside_a_same_colour_distractor():
    half_fov = math.radians(SimConfig().camera_fovy) / 2
    far = 0
    for seed in range(1000, 1040):
        task = sample_task(seed, HARD)
        target = task.target_object
        bearing, distance = bearing_and_distance(task, target)
        assert abs(bearing) > half_fov and 1.5 <= distance <= 4.0
        far += distance > 2.7
        twins = [o for o in task.objects if o.color == target.color and o is not target]
        assert len(twins) == 1 and twins[0].shape != target.shape
        assert f"{target.color} {target.shape}" in task.instruction  # the shape disambiguates
        assert any(p.split("{")[0] in task.instruction for p in HELD_OUT_PHRASINGS)
        assert not any(p.format(color=target.color, shape=target.shape) == task.instruction for p in PHRASINGS)
        assert min(math.dist((a.x, a.y), (b.x, b.y)) for a in task.objects for b in task.objects if a is not b) >= 0.9
    assert far >= 10  # beyond the standard set's 2.7 m
    assert sample_task(1000, HARD) == sample_task(1000, HARD)


def test_the_standard_set_is_unchanged_by_the_hard_one():
    task = sample_task(1000)
    assert task.instruction in {p.format(color=task.target_object.color, shape=task.target_object.shape)
                                for p in PHRASINGS}
    half_fov = math.radians(SimConfig().camera_fovy) / 2
    assert all(abs(bearing_and_distance(task, o)[0]) < half_fov for o in task.objects)


def test_the_expert_searches_one_way_for_targets_behind_and_steers_back_to_ones_just_out_of_view():
    assert expert_command_at(math.radians(-120), 2.0) == (0.0, SEARCH_RATE)
    assert expert_command_at(math.radians(120), 2.0) == (0.0, SEARCH_RATE)
    v, w = expert_command_at(math.radians(-20), 2.0)
    assert w < 0 and v > 0
    v, w = expert_command_at(math.radians(-60), 2.0)  # out of view on the right: turn back, not round
    assert w == -1.0 and v < 0.05  # (almost) in place


@pytest.mark.parametrize("policy", ["zero", "random"])
def test_baselines_fail_the_hard_set(policy):
    results = [run_baseline(sample_task(seed, HARD), policy, HARD) for seed in range(1000, 1005)]
    assert not any(r.success for r in results)
