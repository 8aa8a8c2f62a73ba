"""How far the robot has moved since the image its VL features came from.

Features are reused for up to a few seconds; the action expert can only act on where the target is
*now* if it knows the motion since their source image. The robot knows it without extra sensors:
its yaw from the gyro (or, without one, from the yaw rate it commanded) and its forward travel from
the forward speed it executed. `MotionHistory` integrates both at every sensor sample into a
cumulative pose (yaw, x, y in the frame of the history's start), so the motion between any two
times is a constant-time lookup rotated into the body frame at the earlier time:

    motion_since(t_image, t) = [t - t_image, dx, dy, dyaw]   (body frame at t_image; s, m, m, rad)

The node streams samples and commands into it; offline replay does the same through the node's
core; training builds one history per bag from the recorded streams with the same kernel
(`extend`) and queries many (t_image, t) pairs at once.
"""

from __future__ import annotations

import math

import numpy as np

MOTION_INPUT = "motion_since_image"
MOTION_LAYOUT = ("feature_age_s", "dx_m", "dy_m", "dyaw_rad")
MOTION_DIM = len(MOTION_LAYOUT)
# Channel of the yaw rate in a sensor sample, per sensor type; types without one integrate the commanded yaw rate.
YAW_RATE_CHANNEL = {"imu": 2}


def twist_components(action, twist_mapping) -> tuple[float, float]:
    """(forward speed, yaw rate) of an action vector whose dimensions map to Twist fields."""
    fields = list(twist_mapping)
    forward = float(action[fields.index("linear.x")]) if "linear.x" in fields else 0.0
    yaw_rate = float(action[fields.index("angular.z")]) if "angular.z" in fields else 0.0
    return forward, yaw_rate


def sample_yaw_rate(sensor_type: str, sample, commanded_yaw_rate: float) -> float:
    channel = YAW_RATE_CHANNEL.get(sensor_type)
    return commanded_yaw_rate if channel is None else float(sample[channel])


def arc_step(yaw, speed, rate, dt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dy, dyaw) of a base moving at constant forward `speed` and yaw `rate` for `dt` from heading
    `yaw` (elementwise): the exact arc; a straight line at the mid heading where the turn is ~0."""
    dyaw = rate * dt
    straight = np.abs(dyaw) < 1e-6
    safe = np.where(straight, 1.0, rate)
    dx = np.where(straight, speed * dt * np.cos(yaw + dyaw / 2), speed / safe * (np.sin(yaw + dyaw) - np.sin(yaw)))
    dy = np.where(straight, speed * dt * np.sin(yaw + dyaw / 2), -speed / safe * (np.cos(yaw + dyaw) - np.cos(yaw)))
    return dx, dy, dyaw


class MotionHistory:
    """Cumulative yaw and planar position at each sensor sample time, for the last `horizon` seconds.

    `extend(times, yaw_rates, forward_speeds)` integrates samples (times increasing): between two
    samples the robot turns at the earlier sample's yaw rate and moves at its forward speed (the
    zero-order hold of a command or a gyro reading). Storage grows in a buffer twice the horizon
    and is compacted, so streaming costs O(1) per sample.
    """

    def __init__(self, horizon: float, sample_hz: float, capacity: int | None = None) -> None:
        if horizon <= 0 or sample_hz <= 0:
            raise ValueError(f"horizon and sample_hz must be > 0, got {horizon} and {sample_hz}")
        self.horizon = horizon
        self._capacity = capacity or max(16, int(2 * horizon * sample_hz * 1.5))
        self._data = np.zeros((self._capacity, 4))  # t, yaw, x, y
        self._n = 0
        self._rate = 0.0   # yaw rate and forward speed held since the newest sample
        self._speed = 0.0

    def __len__(self) -> int:
        return self._n

    def clear(self) -> None:
        self._n = 0
        self._rest()

    def _rest(self) -> None:
        self._rate = self._speed = 0.0

    def add(self, t: float, yaw_rate: float, forward_speed: float) -> None:
        """One sample (the node's 650 Hz hot path): `extend`'s arithmetic in scalars."""
        n = self._n
        if n == 0 or n == self._capacity:
            self.extend([t], [yaw_rate], [forward_speed])
            return
        t_prev, yaw_prev, x_prev, y_prev = self._data[n - 1]
        if t <= t_prev:
            return
        rate, speed, dt = self._rate, self._speed, t - t_prev
        dyaw = rate * dt
        if abs(dyaw) < 1e-6:
            mid = yaw_prev + dyaw / 2
            dx, dy = speed * dt * math.cos(mid), speed * dt * math.sin(mid)
        else:
            dx = speed / rate * (math.sin(yaw_prev + dyaw) - math.sin(yaw_prev))
            dy = -speed / rate * (math.cos(yaw_prev + dyaw) - math.cos(yaw_prev))
        self._data[n] = (t, yaw_prev + dyaw, x_prev + dx, y_prev + dy)
        self._n = n + 1
        self._rate, self._speed = float(yaw_rate), float(forward_speed)

    def extend(self, times, yaw_rates, forward_speeds) -> None:
        """Integrate samples at `times` (increasing, after the newest one; older ones are ignored)."""
        times = np.atleast_1d(np.asarray(times, dtype=np.float64))
        rates = np.broadcast_to(np.asarray(yaw_rates, dtype=np.float64), times.shape)
        speeds = np.broadcast_to(np.asarray(forward_speeds, dtype=np.float64), times.shape)
        if self._n:
            keep = times > self._data[self._n - 1, 0]
            times, rates, speeds = times[keep], rates[keep], speeds[keep]
        if len(times) == 0:
            return
        if self._n == 0:  # the first sample is the origin of the cumulative pose
            self._append(np.array([[times[0], 0.0, 0.0, 0.0]]))
            self._rate, self._speed = float(rates[0]), float(speeds[0])
            times, rates, speeds = times[1:], rates[1:], speeds[1:]
            if len(times) == 0:
                return
        t_prev, yaw_prev, x_prev, y_prev = self._data[self._n - 1]
        # Rate and speed on each interval: the previous sample's (the first interval uses the held ones).
        held_rate = np.concatenate([[self._rate], rates[:-1]])
        held_speed = np.concatenate([[self._speed], speeds[:-1]])
        dt = np.diff(np.concatenate([[t_prev], times]))
        yaw_start = yaw_prev + np.concatenate([[0.0], np.cumsum(held_rate * dt)[:-1]])
        dx, dy, dyaw = arc_step(yaw_start, held_speed, held_rate, dt)
        rows = np.stack([times, yaw_prev + np.cumsum(dyaw), x_prev + np.cumsum(dx), y_prev + np.cumsum(dy)], axis=1)
        self._append(rows)
        self._rate, self._speed = float(rates[-1]), float(speeds[-1])

    def _append(self, rows: np.ndarray) -> None:
        if self._n + len(rows) > self._capacity:
            newest = rows[-1, 0] if len(rows) else self._data[self._n - 1, 0]
            keep_from = int(np.searchsorted(self._data[: self._n, 0], newest - self.horizon, side="left"))
            keep_from = max(0, keep_from - 1)
            kept = self._data[keep_from : self._n].copy()
            needed = len(kept) + len(rows)
            if needed > self._capacity:  # a batch longer than the buffer (training): grow
                self._capacity = 2 * needed
                self._data = np.zeros((self._capacity, 4))
            self._data[: len(kept)] = kept
            self._n = len(kept)
        self._data[self._n : self._n + len(rows)] = rows
        self._n += len(rows)

    def _pose_at(self, t: np.ndarray) -> np.ndarray:
        """Cumulative (yaw, x, y) at times `t` (linear between samples; held past the newest)."""
        data = self._data[: self._n]
        return np.stack([np.interp(t, data[:, 0], data[:, k]) for k in (1, 2, 3)], axis=-1)

    def oldest_time(self) -> float | None:
        return float(self._data[0, 0]) if self._n else None

    def motion_since(self, t_image, t) -> np.ndarray:
        """[..., 4] float32: age t - t_image, and dx, dy, dyaw from t_image to t in the body frame at
        t_image. Both times are clamped to the history (a sample is there at least every
        max_sensor_gap while the robot runs). Empty history: zero motion."""
        t_image = np.asarray(t_image, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64)
        age = t - t_image
        if self._n == 0:
            out = np.zeros((*np.broadcast(t_image, t).shape, MOTION_DIM), dtype=np.float32)
            out[..., 0] = age
            return out
        p0, p1 = self._pose_at(t_image), self._pose_at(t)
        c, s = np.cos(p0[..., 0]), np.sin(p0[..., 0])
        gx, gy = p1[..., 1] - p0[..., 1], p1[..., 2] - p0[..., 2]
        out = np.stack([age * np.ones_like(gx), c * gx + s * gy, -s * gx + c * gy, p1[..., 0] - p0[..., 0]], axis=-1)
        return out.astype(np.float32)


def command_at(times: np.ndarray, command_times: np.ndarray, command_values: np.ndarray) -> np.ndarray:
    """Zero-order hold of a command series [N, D] at `times` (zero before the first command)."""
    idx = np.searchsorted(command_times, times, side="right") - 1
    held = command_values[np.clip(idx, 0, max(len(command_values) - 1, 0))] if len(command_values) else \
        np.zeros((len(times), command_values.shape[-1]))
    return np.where((idx >= 0)[:, None], held, 0.0)


def extend_from_streams(history: MotionHistory, sensor_type: str, sample_times: np.ndarray, samples: np.ndarray,
                        command_times: np.ndarray, commands: np.ndarray) -> MotionHistory:
    """Append a whole recording (training, replay checks): `samples` [N, C] of the sensor and the
    executed `commands` [M, 2] (forward speed, yaw rate), each held until the next. Recordings are
    joined end to end with the robot at rest in between."""
    history._rest()
    cmds = command_at(sample_times, command_times, commands.reshape(-1, 2))
    channel = YAW_RATE_CHANNEL.get(sensor_type)
    rates = cmds[:, 1] if channel is None else samples[:, channel]
    history.extend(sample_times, rates, cmds[:, 0])
    return history
