"""Ring buffer of a high-rate sensor stream (~650 Hz) that yields the latest fixed-size window.

`push` is on the hot path (one call per message), so it does one row copy and a few comparisons;
checks over the whole window (gaps, staleness) happen once per inference in `window`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from .validation import MAX_FUTURE

# Channel order of one sample, per sensor type (the model is trained on this order).
SENSOR_CHANNELS: dict[str, tuple[str, ...]] = {
    "imu": ("angular_velocity.x", "angular_velocity.y", "angular_velocity.z",
            "linear_acceleration.x", "linear_acceleration.y", "linear_acceleration.z"),
    "wrench": ("force.x", "force.y", "force.z", "torque.x", "torque.y", "torque.z"),
}


def imu_sample(msg) -> tuple[float, ...]:
    """sensor_msgs/Imu (rclpy or rosbags message) -> one sample in SENSOR_CHANNELS['imu'] order."""
    g, a = msg.angular_velocity, msg.linear_acceleration
    return (g.x, g.y, g.z, a.x, a.y, a.z)


def wrench_sample(msg) -> tuple[float, ...]:
    """geometry_msgs/WrenchStamped -> one sample in SENSOR_CHANNELS['wrench'] order."""
    f, t = msg.wrench.force, msg.wrench.torque
    return (f.x, f.y, f.z, t.x, t.y, t.z)


SAMPLE_FROM_MESSAGE = {"imu": imu_sample, "wrench": wrench_sample}

# Largest plausible |value| per channel; beyond it a sample is a sensor or transport fault, not motion.
# IMU: 35 rad/s (2000 deg/s, the usual gyro range) and 160 m/s^2 (16 g); wrench: 10 kN, 1 kNm.
SENSOR_LIMITS: dict[str, tuple[float, ...]] = {
    "imu": (35.0,) * 3 + (160.0,) * 3,
    "wrench": (1e4,) * 3 + (1e3,) * 3,
}


class PushResult(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate_stamp"
    OUT_OF_ORDER = "out_of_order"
    NON_FINITE = "non_finite"
    WRONG_SIZE = "wrong_size"
    OUT_OF_RANGE = "out_of_range"
    ZERO_STAMP = "zero_stamp"
    FUTURE_STAMP = "future_stamp"


class WindowStatus(enum.Enum):
    OK = "ok"
    INCOMPLETE = "window_incomplete"
    GAP = "sensor_gap"
    AHEAD = "ahead_of_clock"  # the newest sample lies ahead of now (the clock went back)


@dataclass(frozen=True)
class Window:
    status: WindowStatus
    stamps: np.ndarray | None = None  # float64 [W], increasing
    values: np.ndarray | None = None  # float32 [W, C]
    largest_gap: float = 0.0  # largest spacing inside the window or since its newest sample (< 0: AHEAD)

    @property
    def newest_stamp(self) -> float:
        assert self.stamps is not None
        return float(self.stamps[-1])


class SensorWindow:
    """Keeps the newest `capacity` samples; rejects duplicate, out-of-order and non-finite ones."""

    def __init__(self, channels: int, capacity: int, limits=None) -> None:
        if channels < 1 or capacity < 1:
            raise ValueError(f"channels and capacity must be >= 1, got {channels} and {capacity}")
        self.channels = channels
        self._limits = None if limits is None else np.asarray(limits, dtype=np.float64)
        self.capacity = capacity
        self._stamps = np.zeros(capacity, dtype=np.float64)
        self._values = np.zeros((capacity, channels), dtype=np.float32)
        self._next = 0  # index the next sample is written to
        self._count = 0
        self._newest = float("-inf")
        self.counts: dict[PushResult, int] = {r: 0 for r in PushResult}

    def __len__(self) -> int:
        return self._count

    @property
    def newest_stamp(self) -> float | None:
        return self._newest if self._count else None

    def push(self, stamp: float, values) -> PushResult:
        result = self._check(stamp, values)
        self.counts[result] += 1
        if result is PushResult.ACCEPTED:
            self._stamps[self._next] = stamp
            self._values[self._next] = values
            self._next = (self._next + 1) % self.capacity
            self._count = min(self._count + 1, self.capacity)
            self._newest = stamp
        return result

    def _check(self, stamp: float, values) -> PushResult:
        if len(values) != self.channels:
            return PushResult.WRONG_SIZE
        if not np.isfinite(stamp) or not np.all(np.isfinite(values)):
            return PushResult.NON_FINITE
        if self._limits is not None and np.any(np.abs(values) > self._limits):
            return PushResult.OUT_OF_RANGE
        if stamp == self._newest:
            return PushResult.DUPLICATE
        if stamp < self._newest:
            return PushResult.OUT_OF_ORDER
        return PushResult.ACCEPTED

    def clear(self) -> None:
        self._count = 0
        self._next = 0
        self._newest = float("-inf")

    def window(self, size: int, now: float, max_gap: float, max_ahead: float = MAX_FUTURE) -> Window:
        """The newest `size` samples in time order, or why there is no usable window.

        A gap is any spacing between consecutive samples, or between the newest sample and `now`,
        longer than `max_gap` seconds. A newest sample more than `max_ahead` s after `now` is never a
        pass (its age is negative: the clock went back), whatever max_gap says.
        """
        if size > self.capacity:
            raise ValueError(f"window of {size} samples asked from a buffer of {self.capacity}")
        if self._count < size:
            return Window(WindowStatus.INCOMPLETE)
        idx = (np.arange(self._next - size, self._next)) % self.capacity
        stamps = self._stamps[idx]
        since_newest = now - stamps[-1]
        if since_newest < -max_ahead:
            return Window(WindowStatus.AHEAD, largest_gap=since_newest)
        largest = max(float(np.max(np.diff(stamps))) if size > 1 else 0.0, since_newest)
        if largest > max_gap:
            return Window(WindowStatus.GAP, largest_gap=largest)
        return Window(WindowStatus.OK, stamps, self._values[idx], largest)
