"""Time faults in the ROS-free core: an age below zero never passes a gate, and a clock jump either
way clears everything of the old timeline, stops, and recovers once fresh data arrive."""

from __future__ import annotations

import numpy as np
import pytest
from test_action_pipeline import DT, T0, features, make_core

from mobile_vla_ros.core.chunk_executor import ActionChunk, ChunkExecutor
from mobile_vla_ros.core.feature_cache import FeatureCache
from mobile_vla_ros.core.safety import StopReason
from mobile_vla_ros.core.sensor_window import SensorWindow, WindowStatus
from mobile_vla_ros.core.validation import CLOCK_JUMP_BACKWARD, MAX_FUTURE, ClockWatch
from mobile_vla_ros.core.vlm_schedule import CameraFrame, VlmScheduler

SAMPLE = [0.0, 0.0, 0.1, 0.0, 0.0, 9.81]


def feed(core, start: float, n: int, now_offset: float = 0.0) -> None:
    for i in range(n):
        t = start + i * DT
        core.on_sensor(t, SAMPLE, now=t + now_offset)


def running_core():
    core = make_core()
    core.on_instruction("go", now=T0)
    core.on_features(features(), source_stamp=T0 + 0.01, now=T0 + 0.02)
    feed(core, T0 + 0.01, 100)
    assert core.tick(T0 + 0.01 + 99 * DT).chunk is not None
    return core


def test_a_window_ahead_of_the_clock_is_never_a_pass_whatever_max_gap_allows():
    w = SensorWindow(6, 100)
    for i in range(65):
        w.push(10.0 + i * DT, SAMPLE)
    newest = 10.0 + 64 * DT
    assert w.window(65, newest + 0.01, max_gap=0.05).status is WindowStatus.OK
    ahead = w.window(65, newest - MAX_FUTURE - 0.01, max_gap=1e9, max_ahead=MAX_FUTURE)
    assert ahead.status is WindowStatus.AHEAD and ahead.largest_gap < 0
    assert w.window(65, newest - MAX_FUTURE + 0.01, max_gap=1e9, max_ahead=MAX_FUTURE).status is WindowStatus.OK


def test_features_from_the_future_stop_with_their_own_reason():
    """The gate alone (jump detection off): it holds even where a jump went unnoticed."""
    core = make_core()
    core.clock = ClockWatch(backward=float("inf"), forward=float("inf"))
    core.on_instruction("go", now=T0)
    assert core.on_features(features(), source_stamp=T0 + 2.0, now=T0 + 2.0) is None
    feed(core, T0, 100)  # the clock went back 2 s; the samples are on the new timeline
    result = core.tick(T0 + 99 * DT)
    assert result.reason is StopReason.FROM_THE_FUTURE and result.chunk is None and result.feature_age < 0
    assert core.on_features(features(), source_stamp=T0 + 0.1, now=T0 + 99 * DT) is None
    assert core.tick(T0 + 99 * DT).chunk is not None


def test_the_feature_cache_accepts_new_timeline_features_after_a_restart():
    cache = FeatureCache()
    cache.set_instruction("go", now=100.0)
    assert not cache.update(features(), 95.0)  # the clock went back to 95: looks older than the instruction
    cache.restart_timeline(now=94.0)
    assert cache.instruction == "go" and cache.latest() is None
    assert cache.update(features(), 94.5)


@pytest.mark.parametrize("jump", [-10.0, +10.0])
def test_a_clock_jump_clears_stops_and_recovers_on_fresh_data(jump):
    core = running_core()
    t = T0 + 0.01 + 100 * DT + jump  # the next reading is on the new timeline
    feed(core, t, 1)
    assert core.clock_jumps == 1 and len(core.sensor) == 1 and core.features.latest() is None
    result = core.tick(t + 0.01)
    assert result.reason is StopReason.CLOCK_JUMPED and result.chunk is None
    feed(core, t + DT, 80)  # a full window of fresh samples, but no fresh features yet
    assert core.tick(t + 81 * DT).reason is StopReason.CLOCK_JUMPED
    assert core.on_features(features(), source_stamp=t + 0.05, now=t + 81 * DT) is None
    recovered = core.tick(t + 81 * DT)
    assert recovered.chunk is not None and recovered.chunk.stamp == pytest.approx(t + 80 * DT)
    assert core.safety.stop_events == 1  # one stop for the jump, not one per tick


def test_small_backward_steps_are_not_jumps():
    watch = ClockWatch()
    assert watch.check(10.0) is None
    assert watch.check(10.0 - CLOCK_JUMP_BACKWARD / 2) is None
    assert watch.check(9.0) == "backward" and watch.check(12.5) == "forward"


def test_a_sim_clock_starting_is_not_a_jump():
    """Under use_sim_time the clock reads 0 until the first /clock; 0 -> 1000 s is the clock starting."""
    watch = ClockWatch()
    assert watch.check(0.0) is None and watch.check(1000.0) is None
    assert watch.check(1000.01) is None and watch.check(990.0) == "backward"


def test_the_executor_gives_no_step_of_a_chunk_that_lies_ahead_of_the_clock():
    ex = ChunkExecutor(2, [1.0, 1.0], [10.0, 10.0])
    ex.set_chunk(ActionChunk(100.0, 0.0125, np.full((8, 2), 0.5, np.float32)))
    assert np.all(ex.command(100.0) == 0.5)
    assert np.all(ex.command(100.0 - 0.0125 * 0.5) == 0.5)  # jitter of less than a step: step 0
    assert np.all(ex.command(90.0) == 0.0)  # the clock went back 10 s: nothing of this chunk


def test_the_vlm_schedule_drops_the_old_timeline_but_keeps_the_instruction():
    s = VlmScheduler(max_image_age=0.5)
    s.set_instruction("go", now=100.0)
    s.add_frame("camera", CameraFrame(np.zeros((2, 2, 3), np.uint8), 100.1, "camera"))
    inputs, _ = s.select(now=100.2)
    assert s.select(now=99.0)[0] is None  # a frame 1.1 s ahead of the clock is not fresh
    s.restart_timeline(now=90.0)
    assert not s.is_current(inputs) and not s.frames and s.instruction == "go"
    assert s.add_frame("camera", CameraFrame(np.zeros((2, 2, 3), np.uint8), 90.05, "camera"))
    assert s.select(now=90.1)[0].instruction == "go"
