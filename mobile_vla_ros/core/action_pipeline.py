"""What the action-expert node does on every tick, without ROS: gate on fresh features and a
complete gap-free sensor window, run the backend, check the output, produce a chunk or a stop reason.

Bag replay and benchmarks drive this same class, so offline results are those of the robot code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .backends import InferenceBackend
from .chunk_executor import ActionChunk
from .feature_cache import FeatureCache
from .model_spec import ModelSpec
from .motion import MotionHistory, sample_yaw_rate, twist_components
from .safety import SafetyState, StopReason
from .sensor_window import SENSOR_LIMITS, PushResult, SensorWindow, WindowStatus
from .stats import LatencyStats
from .validation import MAX_FUTURE, ClockWatch, check_stamp


@dataclass(frozen=True)
class TickResult:
    chunk: ActionChunk | None
    reason: StopReason
    detail: str = ""
    feature_age: float | None = None
    motion: np.ndarray | None = None  # [4] motion since the features' image, for models that take it


class ActionExpertCore:
    def __init__(self, spec: ModelSpec, backend: InferenceBackend,
                 max_feature_age: float, max_sensor_gap: float,
                 twist_mapping: tuple[str, ...] | list[str] = ("linear.x", "angular.z")) -> None:
        self.spec = spec
        self.backend = backend
        self.max_feature_age = max_feature_age
        self.max_sensor_gap = max_sensor_gap
        self.features = FeatureCache()
        # Twice the window, so a window is still complete while the newest samples arrive.
        self.sensor = SensorWindow(spec.sensor_channels, 2 * spec.sensor_window, SENSOR_LIMITS[spec.sensor_type])
        self.safety = SafetyState()
        # Motion since the features' image (models with the motion input): integrated at every
        # accepted sensor sample from its gyro (or the commanded yaw rate) and the executed forward speed.
        self.twist_mapping = list(twist_mapping)
        self.motion = MotionHistory(self._motion_horizon(), spec.sensor_hz) if spec.motion_input else None
        self._executed = (0.0, 0.0)  # forward speed, yaw rate of the command executed now
        self.latency = LatencyStats()
        self.rejected_features = 0
        self.inference_errors = 0
        self.clock = ClockWatch()
        self.clock_jumps = 0
        self._after_jump = False  # stopped for a clock jump until a window and features of the new timeline exist

    def _motion_horizon(self) -> float:
        return self.max_feature_age + 1.0

    def set_limits(self, max_feature_age: float, max_sensor_gap: float) -> None:
        self.max_feature_age, self.max_sensor_gap = max_feature_age, max_sensor_gap
        if self.motion is not None:
            self.motion.horizon = self._motion_horizon()

    # -- inputs ---------------------------------------------------------------------------------
    def watch_clock(self, now: float) -> str | None:
        """Call with every clock reading (each input and tick). On a jump ('backward' / 'forward',
        returned) everything of the old timeline is dropped; the caller zeroes its commands."""
        jump = self.clock.check(now)
        if jump is not None:
            self.clock_jumped(now)
        return jump

    def clock_jumped(self, now: float) -> None:
        """Forget the sensor window, features and motion of the old timeline; stop until fresh ones arrive."""
        self.sensor.clear()
        self.features.restart_timeline(now)
        if self.motion is not None:
            self.motion.clear()
        self._executed = (0.0, 0.0)
        self._after_jump = True
        self.clock.last = now
        self.clock_jumps += 1

    def on_executed(self, action) -> None:
        """The command the robot executes from now on (action vector, mapped by twist_mapping)."""
        self._executed = twist_components(action, self.twist_mapping)

    def on_instruction(self, instruction: str, now: float) -> bool:
        return self.features.set_instruction(instruction, now)

    def on_features(self, features: np.ndarray, source_stamp: float, now: float) -> str | None:
        """Store features; returns a reason when they are rejected (stamp, shape/dtype, old instruction)."""
        self.watch_clock(now)
        bad_stamp = check_stamp(source_stamp, now)
        if bad_stamp is not None:
            self.rejected_features += 1
            return f"vl_features: {bad_stamp}"
        want = (self.spec.feature_tokens, self.spec.feature_dim)
        if features.dtype != np.float32 or features.shape != want:
            self.rejected_features += 1
            return f"vl_features: expected float32 {list(want)} (model.yaml), got {features.dtype} " \
                   f"{list(features.shape)}"
        if not np.all(np.isfinite(features)):
            self.rejected_features += 1
            return "vl_features: non-finite values"
        if not self.features.update(features, source_stamp):
            return "vl_features: computed before the current instruction arrived"
        return None

    def on_sensor(self, stamp: float, values, now: float) -> PushResult:
        self.watch_clock(now)
        bad_stamp = check_stamp(stamp, now)
        if bad_stamp is not None:
            result = PushResult(bad_stamp)
            self.sensor.counts[result] += 1
            return result
        result = self.sensor.push(stamp, values)
        if result is PushResult.ACCEPTED and self.motion is not None:
            forward, commanded_rate = self._executed
            self.motion.add(stamp, sample_yaw_rate(self.spec.sensor_type, values, commanded_rate), forward)
        return result

    # -- tick -----------------------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        self.watch_clock(now)
        result = self._evaluate(now)
        self.safety.update(result.reason, result.detail)
        return result

    def check_inputs(self, now: float) -> TickResult | None:
        """The tick's gates without the inference, for the executor's faster rate: a stop the gates
        find (stale features, a sensor gap, a clock jump, ...) takes effect now, not at the next tick.
        Returns the stop, or None when the inputs would still pass."""
        self.watch_clock(now)
        gated = self._gates(now)
        if isinstance(gated, TickResult):
            self.safety.update(gated.reason, gated.detail)
            return gated
        return None

    def _gates(self, now: float) -> TickResult | tuple:
        """A stop, or what passed the gates: (cached features, sensor window, feature age)."""
        if self.features.instruction is None:
            return TickResult(None, StopReason.NO_INSTRUCTION)
        if self._after_jump:
            if self.features.latest() is None or len(self.sensor) < self.spec.sensor_window:
                return TickResult(None, StopReason.CLOCK_JUMPED)
            self._after_jump = False
        cached = self.features.latest()
        if cached is None:
            reason = StopReason.NO_FEATURES if self.features.updates == 0 else StopReason.INSTRUCTION_CHANGED
            return TickResult(None, reason)
        age = now - cached.source_stamp
        if age < -MAX_FUTURE:  # never a pass: features of an image the clock has not reached yet
            return TickResult(None, StopReason.FROM_THE_FUTURE, f"VL features {-age:.2f} s ahead of the clock", age)
        if age > self.max_feature_age:
            return TickResult(None, StopReason.FEATURES_STALE, f"age {age:.2f} s > {self.max_feature_age} s", age)
        window = self.sensor.window(self.spec.sensor_window, now, self.max_sensor_gap, MAX_FUTURE)
        if window.status is WindowStatus.AHEAD:
            return TickResult(None, StopReason.FROM_THE_FUTURE,
                              f"newest sensor sample {-window.largest_gap:.2f} s ahead of the clock", age)
        if window.status is WindowStatus.INCOMPLETE:
            return TickResult(None, StopReason.WINDOW_INCOMPLETE, f"{len(self.sensor)} samples", age)
        if window.status is WindowStatus.GAP:
            return TickResult(None, StopReason.SENSOR_GAP,
                              f"gap {window.largest_gap * 1e3:.0f} ms > {self.max_sensor_gap * 1e3:.0f} ms", age)
        return cached, window, age

    def _evaluate(self, now: float) -> TickResult:
        gated = self._gates(now)
        if isinstance(gated, TickResult):
            return gated
        cached, window, age = gated
        inputs = [cached.features[-1:].reshape(1, -1), window.values[None]]
        motion = None
        if self.motion is not None:
            motion = self.motion.motion_since(cached.source_stamp, window.newest_stamp)
            inputs.append(motion[None])
        start = time.monotonic()
        try:
            actions = self.backend.run(*inputs)
        except Exception as exc:  # any backend failure stops the robot instead of the node
            self.inference_errors += 1
            return TickResult(None, StopReason.INFERENCE_ERROR, f"{type(exc).__name__}: {exc}", age)
        self.latency.add(time.monotonic() - start)
        want = (1, self.spec.chunk_size, self.spec.action_dim)
        if actions.shape != want:
            self.inference_errors += 1
            return TickResult(None, StopReason.INFERENCE_ERROR,
                              f"output shape expected {list(want)}, got {list(actions.shape)}", age)
        if not np.all(np.isfinite(actions)):
            return TickResult(None, StopReason.NON_FINITE_OUTPUT, "", age)
        chunk = ActionChunk(window.newest_stamp, self.spec.action_dt, actions[0].astype(np.float32))
        return TickResult(chunk, StopReason.NONE, "", age, motion)
