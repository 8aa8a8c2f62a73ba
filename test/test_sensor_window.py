"""Sensor ring buffer: time order, duplicates / out-of-order / non-finite rejected, gaps detected."""

import numpy as np

from mobile_vla_ros.core.sensor_window import PushResult, SensorWindow, WindowStatus


def fill(buf: SensorWindow, n: int, t0: float = 0.0, dt: float = 1 / 650):
    for i in range(n):
        assert buf.push(t0 + i * dt, [float(i)] * buf.channels) is PushResult.ACCEPTED


def test_window_returns_latest_samples_in_time_order_across_wraparound():
    buf = SensorWindow(channels=6, capacity=130)
    fill(buf, 300)
    w = buf.window(65, now=299 / 650, max_gap=0.01)
    assert w.status is WindowStatus.OK
    assert w.values.shape == (65, 6) and w.values.dtype == np.float32
    assert np.array_equal(w.values[:, 0], np.arange(235, 300, dtype=np.float32))
    assert np.all(np.diff(w.stamps) > 0)
    assert w.newest_stamp == 299 / 650


def test_incomplete_window():
    buf = SensorWindow(6, 130)
    fill(buf, 64)
    assert buf.window(65, now=0.1, max_gap=1.0).status is WindowStatus.INCOMPLETE


def test_duplicate_out_of_order_and_bad_values_are_rejected_and_counted():
    buf = SensorWindow(6, 10)
    assert buf.push(1.0, [0.0] * 6) is PushResult.ACCEPTED
    assert buf.push(1.0, [0.0] * 6) is PushResult.DUPLICATE
    assert buf.push(0.5, [0.0] * 6) is PushResult.OUT_OF_ORDER
    assert buf.push(1.1, [float("nan")] + [0.0] * 5) is PushResult.NON_FINITE
    assert buf.push(float("inf"), [0.0] * 6) is PushResult.NON_FINITE
    assert buf.push(1.2, [0.0] * 5) is PushResult.WRONG_SIZE
    assert len(buf) == 1
    assert buf.counts[PushResult.DUPLICATE] == buf.counts[PushResult.OUT_OF_ORDER] == 1


def test_gap_inside_the_window_and_since_the_newest_sample():
    buf = SensorWindow(6, 130)
    fill(buf, 40)
    fill(buf, 40, t0=1.0)  # 0.94 s hole in the middle
    w = buf.window(65, now=1.0 + 39 / 650, max_gap=0.05)
    assert w.status is WindowStatus.GAP and w.largest_gap > 0.9
    assert buf.window(40, now=1.0 + 39 / 650, max_gap=0.05).status is WindowStatus.OK
    assert buf.window(40, now=1.5, max_gap=0.05).status is WindowStatus.GAP  # stream stopped
