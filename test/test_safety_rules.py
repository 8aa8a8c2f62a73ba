"""The action core's safety and scheduling rules, each pinned by behaviour (the survivors of a mutation
run of core/: feature and window plumbing, rate limiter reset, gate boundaries, gate order, stop
counting, chunk step selection)."""

from __future__ import annotations

import numpy as np
import pytest
from test_action_pipeline import DT, T0, make_core

from mobile_vla_ros.core.chunk_executor import ActionChunk, ChunkExecutor
from mobile_vla_ros.core.safety import StopReason


class Spy:
    """Records the inputs it is given and answers with a function of them."""

    name = "spy"

    def __init__(self):
        self.inputs = []

    def run(self, *inputs):
        self.inputs.append([np.array(x) for x in inputs])
        f, w = inputs[0], inputs[1]
        out = np.zeros((1, 8, 2), np.float32)
        out[0, :, 0] = f[0, 0] + w[0, -1, 0]
        out[0, :, 1] = w[0, 0, 0]
        return out


def ramp_core(backend=None, n=100):
    core = make_core(backend or Spy())
    core.on_instruction("go", now=T0)
    feats = np.arange(64, dtype=np.float32)[None] / 64
    core.on_features(feats, source_stamp=T0, now=T0)
    for i in range(n):  # channel 0 carries the sample's index: time order is visible
        core.on_sensor(T0 + i * DT, [i / 10, 0, 0, 0, 0, 9.81], now=T0 + i * DT)
    return core, feats


def test_the_model_gets_exactly_the_cached_features_and_the_newest_window_in_time_order():
    core, feats = ramp_core()
    result = core.tick(T0 + 99 * DT)
    f, w = core.backend.inputs[-1][:2]
    np.testing.assert_array_equal(f, feats)
    np.testing.assert_allclose(w[0, :, 0], np.arange(35, 100) / 10)  # oldest first, newest last
    assert result.chunk.actions[0, 0] == pytest.approx(feats[0, 0] + 9.9)
    assert result.chunk.actions[0, 1] == pytest.approx(3.5)


def test_feature_age_boundary_is_inclusive_and_the_sensor_gap_boundary_too():
    core, _ = ramp_core()
    newest = T0 + 99 * DT
    core.max_feature_age = newest - T0  # exactly the age: still fresh
    assert core.tick(newest).chunk is not None
    core.max_feature_age = (newest - T0) * 0.999
    assert core.tick(newest).reason is StopReason.FEATURES_STALE
    core.max_feature_age = 10.0
    now = newest + 0.03
    core.max_sensor_gap = now - newest  # exactly the gap since the newest sample
    assert core.tick(now).chunk is not None
    core.max_sensor_gap = (now - newest) * 0.999
    assert core.tick(now).reason is StopReason.SENSOR_GAP


def test_gates_are_checked_in_order_staleness_before_the_window():
    core = make_core(Spy())
    core.on_instruction("go", now=T0)
    core.on_features(np.zeros((1, 64), np.float32), source_stamp=T0, now=T0)
    assert core.tick(T0 + 1.5).reason is StopReason.FEATURES_STALE  # stale and no window: stale is reported


def test_stop_events_count_changes_not_ticks():
    core, _ = ramp_core()
    for k in range(5):
        core.tick(T0 + 1.2 + k * 0.1)  # five ticks of one stop (max_feature_age 1 s)
    assert core.safety.stop_events == 1 and core.safety.reason is StopReason.FEATURES_STALE


def test_after_a_stop_the_first_command_ramps_from_zero():
    ex = ChunkExecutor(2, [1.0, 1.0], [0.1, 0.1])
    ex.set_chunk(ActionChunk(0.0, 0.0125, np.full((8, 2), 0.8, np.float32)))
    for k in range(10):
        ex.command(k * 0.001)
    assert np.allclose(ex.command(0.011), 0.8)  # ramped up to the chunk's value
    assert np.all(ex.reset_to_zero() == 0)
    ex.set_chunk(ActionChunk(1.0, 0.0125, np.full((8, 2), 0.8, np.float32)))
    np.testing.assert_allclose(ex.command(1.0), 0.1)  # one step up from zero, not back to 0.8 at once


@pytest.mark.parametrize(("offset", "step"), [(0.0, 0), (0.0125, 1), (0.0125 - 1e-6, 0), (0.0125 + 1e-6, 1),
                                              (3 * 0.0125, 3), (7.999 * 0.0125, 7)])
def test_the_step_is_the_floor_of_the_elapsed_steps(offset, step):
    chunk = ActionChunk(10.0, 0.0125, np.arange(16, dtype=np.float32).reshape(8, 2))
    assert chunk.step_index(10.0 + offset) == step


def test_an_equal_stamp_chunk_replaces_the_current_one_and_an_older_does_not():
    ex = ChunkExecutor(2, [10.0, 10.0], [10.0, 10.0])
    ex.set_chunk(ActionChunk(5.0, 0.0125, np.full((8, 2), 1.0, np.float32)))
    ex.set_chunk(ActionChunk(5.0, 0.0125, np.full((8, 2), 2.0, np.float32)))
    assert ex.chunk.actions[0, 0] == 2.0
    ex.set_chunk(ActionChunk(4.9, 0.0125, np.full((8, 2), 3.0, np.float32)))
    assert ex.chunk.actions[0, 0] == 2.0


def test_the_executor_rate_gate_check_stops_between_ticks_without_running_the_model():
    """check_inputs runs the tick's gates only: fresh inputs pass without an inference; a sensor gap
    stops the core at once (one stop event, which the next tick does not count again)."""
    core, _ = ramp_core()
    newest = T0 + 99 * DT
    assert core.tick(newest).chunk is not None
    calls = len(core.backend.inputs)
    assert core.check_inputs(newest + 0.01) is None and not core.safety.stopped
    assert len(core.backend.inputs) == calls
    stop = core.check_inputs(newest + core.max_sensor_gap + 0.001)
    assert stop.reason is StopReason.SENSOR_GAP and core.safety.stopped and core.safety.stop_events == 1
    assert core.tick(newest + 0.06).reason is StopReason.SENSOR_GAP and core.safety.stop_events == 1
    assert len(core.backend.inputs) == calls


# -- survivors of the mutation run (docs/mutation/report.md), pinned by behaviour -----------------
def test_limits_clamp_both_signs_and_count_exactly_what_they_changed():
    ex = ChunkExecutor(2, [0.5, 0.1], [10.0, 10.0])
    ex.set_chunk(ActionChunk(0.0, 0.0125, np.tile(np.array([[-0.9, 0.1]], np.float32), (8, 1))))
    out = ex.command(0.0)
    assert out.dtype == np.float32 and out.tolist() == pytest.approx([-0.5, 0.1])
    # -0.9 was clamped; 0.1 equals its limit (float32 vs the limit as given) and is not counted.
    assert ex.clamped_values == 1 and ex.rate_limited_values == 0


def test_the_rate_limit_holds_going_down_too_and_an_exact_step_is_not_limited():
    ex = ChunkExecutor(1, [1.0], [0.1])
    ex.set_chunk(ActionChunk(0.0, 0.0125, np.full((8, 1), 0.1, np.float32)))
    assert ex.command(0.0).tolist() == pytest.approx([0.1]) and ex.rate_limited_values == 0  # exactly one step
    ex.set_chunk(ActionChunk(0.1, 0.0125, np.full((8, 1), -0.9, np.float32)))
    assert ex.command(0.1).tolist() == pytest.approx([0.0])  # down by one step, not to -0.9 at once
    assert ex.rate_limited_values == 1


def test_steps_past_the_chunk_are_counted_each_and_limits_name_the_parameter():
    ex = ChunkExecutor(2, [1.0, 1.0], [10.0, 10.0])
    ex.set_chunk(ActionChunk(0.0, 0.0125, np.full((8, 2), 0.3, np.float32)))
    assert ex.command(0.2).tolist() == [0.0, 0.0] and ex.command(0.3).tolist() == [0.0, 0.0]
    assert ex.exhausted_steps == 2
    assert ex.reset_to_zero().dtype == np.float32
    with pytest.raises(ValueError, match=r"^action_limits: expected 2 values \(one per action\), got 1$"):
        ex.set_limits([1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match=r"^max_action_step: expected 2 values \(one per action\), got 3$"):
        ex.set_limits([1.0, 1.0], [1.0, 1.0, 1.0])


def test_a_chunk_two_steps_ahead_of_the_clock_gives_no_step():
    chunk = ActionChunk(10.0, 0.0125, np.ones((8, 2), np.float32))
    assert chunk.step_index(10.0 - 0.5 * 0.0125) == 0  # jitter of less than a step: step 0
    assert chunk.step_index(10.0 - 1.5 * 0.0125) < 0  # more than a step ahead: none


def test_a_jump_clears_the_motion_and_the_executed_command_and_keeps_watching_the_clock():
    from test_time_faults import feed, running_core

    core = running_core()
    core.on_executed(np.array([0.5, 0.0], np.float32))  # driving forward at 0.5 m/s
    t = T0 + 50.0
    core.clock_jumped(t)  # as rclpy's jump callback calls it (not through a clock reading)
    assert core.motion.oldest_time() is None  # the old timeline's motion is gone
    feed(core, t, 80)
    core.on_features(np.zeros((1, 64), np.float32), source_stamp=t, now=t + 80 * DT)
    result = core.tick(t + 80 * DT)
    assert result.chunk is not None and result.motion[1] == 0.0  # no forward motion until a new command
    core.watch_clock(t - 5.0)  # a second jump right after: compared with the first jump's time
    assert core.clock_jumps == 2


def test_a_stop_found_between_ticks_describes_its_reason():
    core, _ = ramp_core()
    newest = T0 + 99 * DT
    core.tick(newest)
    core.check_inputs(newest + 0.052)
    assert core.safety.describe() == "sensor gap longer than max_sensor_gap (gap 52 ms > 50 ms)"


def test_a_restarted_timeline_never_revives_a_forward_of_an_older_instruction():
    from mobile_vla_ros.core.vlm_schedule import CameraFrame, VlmScheduler

    s = VlmScheduler(max_image_age=1.0)
    s.set_instruction("a", now=0.0)
    s.add_frame("camera", CameraFrame(np.zeros((2, 2, 3), np.uint8), 0.1, "camera"))
    old, _ = s.select(now=0.2)
    s.set_instruction("b", now=0.3)  # the forward for "a" is no longer current...
    s.restart_timeline(now=0.4)  # ...and a clock jump does not make it current again
    assert not s.is_current(old)
