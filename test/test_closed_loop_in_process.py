"""The in-process closed loop (tools/simulation/closed_loop.py) that the closed-loop benchmark runs on: it is
deterministic, it models the VLM latency in sim time, and its sync mode decides once per forward."""

from __future__ import annotations

import pytest

from mobile_vla_ros.core.safety import feature_age_limit
from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.sim.world import SimConfig
from mobile_vla_ros.tools.simulation.closed_loop import LoopConfig, run_episodes

SIM = SimConfig(time_limit=6.0)


@pytest.fixture(scope="module")
def slow_async():
    return run_episodes([1000], SIM, LoopConfig(mode="async", vlm_hz=0.59, vlm_latency=1.5), default_model_dir())[0]


def test_the_same_seed_gives_the_same_episode(slow_async):
    again = run_episodes([1000], SIM, LoopConfig(mode="async", vlm_hz=0.59, vlm_latency=1.5), default_model_dir())[0]
    assert again["path"] == slow_async["path"] and again["duration"] == slow_async["duration"]


def test_a_slow_vlm_is_modelled_in_sim_time(slow_async):
    # Features are used from 1.5 s after their image until the next ones: ages between 1.5 and 1.5 + 1/0.59 s.
    assert 1.5 <= slow_async["feature_age_p50"] <= 1.5 + 1 / 0.59
    seconds = slow_async["duration"] + 1.0  # + the pause showing the scene
    assert slow_async["forwards"] <= seconds / 1.5 + 1  # never more than one forward per latency
    assert slow_async["chunks"] >= 10 * (slow_async["duration"] - 1.5) * 0.9  # 10 Hz once features exist


def test_sync_decides_once_per_forward_and_async_at_action_hz():
    cfg = dict(vlm_hz=3.33, vlm_latency=0.3)
    sync = run_episodes([1001], SIM, LoopConfig(mode="sync", **cfg), default_model_dir())[0]
    async_ = run_episodes([1001], SIM, LoopConfig(mode="async", **cfg), default_model_dir())[0]
    assert sync["chunks"] <= sync["forwards"]
    # Per second of the run (the scene's 1 s pause included): sync at most one decision per forward
    # (0.3 s), async 10 chunks/s once the first features exist (0.3 s after the instruction).
    assert sync["chunks"] <= (sync["duration"] + 1.0) / 0.3 + 1
    assert async_["chunks"] >= 9 * (async_["duration"] + 1.0 - 0.3)


def test_sync_at_vlm_hz_gets_the_splits_forwards_and_plain_sync_as_many_as_it_can_use():
    """With a 10 ms forward plain sync ticks its VLM at SYNC_LOOP_VLM_HZ (10 Hz: a decision every 0.1 s);
    sync-at-vlm-hz at the row's 3.33 Hz, like the async split's VLM."""
    from mobile_vla_ros.core.params import SYNC_AT_VLM_HZ, SYNC_LOOP_VLM_HZ

    cfg = dict(vlm_hz=3.33, vlm_latency=0.01)
    fast = run_episodes([1001], SIM, LoopConfig(mode="sync", **cfg), default_model_dir())[0]
    budget = run_episodes([1001], SIM, LoopConfig(mode=SYNC_AT_VLM_HZ, **cfg), default_model_dir())[0]
    for run, hz in ((fast, SYNC_LOOP_VLM_HZ), (budget, 3.33)):
        seconds = run["duration"] + 1.0  # + the pause showing the scene
        assert hz * seconds - 2 <= run["forwards"] <= hz * seconds + 2, (run["forwards"], seconds)
        assert run["chunks"] <= run["forwards"]
    # The robot moves one 0.1 s chunk per decision: a third as often, so it covers less ground in the time.
    assert budget["path_length"] / budget["duration"] < 0.6 * fast["path_length"] / fast["duration"]
    with pytest.raises(ValueError, match="expected one of async, sync, sync-at-vlm-hz, got 'sync-at-hz'"):
        LoopConfig(mode="sync-at-hz")


def test_max_feature_age_covers_one_late_forward():
    assert feature_age_limit(1.5, 0.59) == pytest.approx(3.0 + 1 / 0.59)
    assert feature_age_limit(0.01, 3.33) == 2.0  # never below the node's default


def test_a_failed_episode_is_told_apart_by_where_it_ended():
    """Wrong object (within the success radius of another object), in place (less than IN_PLACE_PATH of
    path: it only turned), elsewhere; a success is "target" wherever it ended."""
    from mobile_vla_ros.sim.world import sample_task
    from mobile_vla_ros.tools.simulation.closed_loop import IN_PLACE_PATH, path_summary

    task = sample_task(1004, SIM)
    x0, y0, _ = task.start
    other = next(o for i, o in enumerate(task.objects) if i != task.target)

    def outcome(end, success=False, via=None):
        path = [(x0, y0), *([via] if via else []), end]
        return path_summary({"path": path, "success": success}, task, SIM)["outcome"]

    beside_other = (other.x + other.radius + SIM.success_radius - 0.01, other.y)
    assert outcome(beside_other) == "wrong_object"
    assert outcome((other.x + other.radius + SIM.success_radius + 0.3, other.y + 5.0)) == "elsewhere"
    assert outcome((x0 + IN_PLACE_PATH * 0.9, y0)) == "in_place"
    assert outcome((x0 + IN_PLACE_PATH * 1.1, y0)) == "elsewhere"
    assert outcome(beside_other, success=True) == "target"
    # a long way round that ends where it began is not "in place": it drove
    assert outcome((x0, y0), via=(x0 + 2.0, y0)) == "elsewhere"
