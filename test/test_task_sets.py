"""The hard task set: targets beside or behind the robot, same-colour distractors of the other shape,
targets up to 4 m, phrasings never used in training; and the expert that searches for unseen targets."""

from __future__ import annotations

import math

import pytest

from mobile_vla_ros.sim.episode import DRIVER_IN_VIEW, SEARCH_RATE, Expert, SimEpisode, expert_command_at, run_baseline
from mobile_vla_ros.sim.world import (
    HELD_OUT_PHRASINGS,
    PARAPHRASES,
    PHRASINGS,
    SimConfig,
    in_view,
    sample_task,
    wrap_angle,
)

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


def test_training_paraphrases_change_only_the_words_and_never_give_a_held_out_phrasing():
    assert not set(PARAPHRASES) & set(HELD_OUT_PHRASINGS) and not set(PARAPHRASES) & set(PHRASINGS)
    used = set()
    for task_set in ("standard", "hard"):
        for seed in range(40):
            plain = sample_task(seed, SimConfig(task_set=task_set))
            varied = sample_task(seed, SimConfig(task_set=task_set, paraphrases=True))
            assert varied.objects == plain.objects and varied.target == plain.target and varied.start == plain.start
            target = varied.target_object
            held_out = {p.format(color=target.color, shape=target.shape) for p in HELD_OUT_PHRASINGS}
            assert varied.instruction not in held_out
            used.add(varied.instruction in {p.format(color=target.color, shape=target.shape) for p in PARAPHRASES})
    assert used == {True, False}  # both the plain phrasings and the paraphrases occur
    with pytest.raises(ValueError, match="exclude each other"):
        SimConfig(held_out_phrasings=True, paraphrases=True)


def test_the_standard_set_is_unchanged_by_the_hard_one():
    task = sample_task(1000)
    assert task.instruction in {p.format(color=task.target_object.color, shape=task.target_object.shape)
                                for p in PHRASINGS}
    assert all(in_view(bearing_and_distance(task, o)[0], SimConfig().half_fov) for o in task.objects)


def test_the_expert_searches_one_way_until_it_has_seen_the_target_then_steers_back_the_short_way():
    expert = Expert()
    # Unseen, on either side and even just outside the view: search counter-clockwise.
    for bearing in (-120, 120, -60, 60, -31):
        assert expert_command_at(math.radians(bearing), 2.0, expert.observe(math.radians(bearing))) == \
            (0.0, SEARCH_RATE)
    assert not expert.target_seen
    assert not expert.observe(DRIVER_IN_VIEW)  # the band's edge is outside, as for the labels' in_view
    assert expert.observe(DRIVER_IN_VIEW - 1e-6) and expert.observe(math.radians(-120))  # seen once: remembered
    v, w = expert_command_at(math.radians(-20), 2.0, True)
    assert w < 0 and v > 0
    v, w = expert_command_at(math.radians(-60), 2.0, True)  # turned past it on the right: back, not round
    assert w == -1.0 and v < 0.05  # (almost) in place
    assert expert_command_at(math.radians(-150), 2.0, True)[1] == -1.0


def test_the_expert_solves_the_hard_set():
    durations = []
    for seed in range(1000, 1006):
        episode, expert, k = SimEpisode(sample_task(seed, HARD), HARD, render=False), Expert(), 0
        while not episode.done:
            k += 1
            episode.advance(*expert.command(episode.robot), k / 50)
        result = episode.result()
        episode.close()
        assert result.success, seed
        durations.append(result.duration)
    assert max(durations) < 0.8 * HARD.time_limit  # room for a policy's detours


@pytest.mark.parametrize("policy", ["zero", "random"])
def test_baselines_fail_the_hard_set(policy):
    results = [run_baseline(sample_task(seed, HARD), policy, HARD) for seed in range(1000, 1005)]
    assert not any(r.success for r in results)
