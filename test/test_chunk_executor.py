"""Chunk execution by time: newest chunk wins, past steps are skipped, limits applied last."""

import numpy as np

from mobile_vla_ros.core.chunk_executor import ActionChunk, ChunkExecutor

DT = 0.0125


def chunk(stamp: float, base: float, k: int = 8) -> ActionChunk:
    actions = np.stack([np.full(k, base) + np.arange(k) * 0.01, np.zeros(k)], axis=1).astype(np.float32)
    return ActionChunk(stamp, DT, actions)


def test_step_follows_time_and_newer_chunk_skips_past_steps():
    ex = ChunkExecutor(2, limits=[10, 10], max_step=[10, 10])
    ex.set_chunk(chunk(100.0, 0.3))
    assert np.isclose(ex.command(100.0)[0], 0.30)
    assert np.isclose(ex.command(100.0 + 2.5 * DT)[0], 0.32)
    ex.set_chunk(chunk(100.02, 0.5))  # newer chunk, computed from later sensor data
    # now = 100.05 is 2.4 steps into the new chunk: step 2, not step 0 (no replay of the past)
    assert np.isclose(ex.command(100.05)[0], 0.52)
    ex.set_chunk(chunk(99.0, 0.9))  # an older chunk never replaces a newer one
    assert np.isclose(ex.command(100.05)[0], 0.52)


def test_a_used_up_chunk_holds_its_last_action_one_step_for_its_successor_then_gives_zero():
    ex = ChunkExecutor(2, limits=[10, 10], max_step=[10, 10])
    ex.set_chunk(chunk(0.0, 0.3))
    # the successor is due now (stamped with its sensor sample, it arrives a few ms late): no brake
    assert np.isclose(ex.command(8 * DT + 1e-6)[0], 0.37) and ex.exhausted_steps == 0
    assert np.isclose(ex.command(9 * DT - 1e-6)[0], 0.37)
    # more than a step late: no chunk covers now, the command is zero and the step counted
    assert np.all(ex.command(9 * DT + 1e-6) == 0) and ex.exhausted_steps == 1
    ex.set_chunk(chunk(9 * DT, 0.5))  # the successor, late: from its own first step on
    assert np.isclose(ex.command(9 * DT + 1e-6)[0], 0.5)


def test_limits_clamp_then_rate_limit():
    ex = ChunkExecutor(2, limits=[0.4, 1.0], max_step=[0.1, 1.0])
    ex.set_chunk(chunk(0.0, 0.9))
    out = [ex.command(i * DT)[0] for i in range(6)]
    assert np.allclose(out, [0.1, 0.2, 0.3, 0.4, 0.4, 0.4], atol=1e-6)  # ramps at 0.1/step up to the bound
    assert ex.clamped_values == 6 and ex.rate_limited_values == 3
    assert np.all(ex.reset_to_zero() == 0)  # a safe stop is immediate, not rate-limited


def test_wrong_shapes_are_rejected():
    ex = ChunkExecutor(2, limits=[1, 1], max_step=[1, 1])
    for bad in (lambda: ex.set_limits([1, 1, 1], [1, 1]),
                lambda: ex.set_chunk(ActionChunk(0.0, DT, np.zeros((8, 3), np.float32)))):
        try:
            bad()
        except ValueError as exc:
            assert "expected" in str(exc)
        else:
            raise AssertionError("accepted a wrong shape")
