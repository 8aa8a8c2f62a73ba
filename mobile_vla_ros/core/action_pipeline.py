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
from .safety import SafetyState, StopReason
from .sensor_window import SENSOR_LIMITS, PushResult, SensorWindow, WindowStatus
from .stats import LatencyStats
from .validation import check_stamp


@dataclass(frozen=True)
class TickResult:
    chunk: ActionChunk | None
    reason: StopReason
    detail: str = ""
    feature_age: float | None = None


class ActionExpertCore:
    def __init__(self, spec: ModelSpec, backend: InferenceBackend,
                 max_feature_age: float, max_sensor_gap: float) -> None:
        self.spec = spec
        self.backend = backend
        self.max_feature_age = max_feature_age
        self.max_sensor_gap = max_sensor_gap
        self.features = FeatureCache()
        # Twice the window, so a window is still complete while the newest samples arrive.
        self.sensor = SensorWindow(spec.sensor_channels, 2 * spec.sensor_window, SENSOR_LIMITS[spec.sensor_type])
        self.safety = SafetyState()
        self.latency = LatencyStats()
        self.rejected_features = 0
        self.inference_errors = 0

    # -- inputs ---------------------------------------------------------------------------------
    def on_instruction(self, instruction: str, now: float) -> bool:
        return self.features.set_instruction(instruction, now)

    def on_features(self, features: np.ndarray, source_stamp: float, now: float) -> str | None:
        """Store features; returns a reason when they are rejected (stamp, shape/dtype, old instruction)."""
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
        bad_stamp = check_stamp(stamp, now)
        if bad_stamp is not None:
            result = PushResult(bad_stamp)
            self.sensor.counts[result] += 1
            return result
        return self.sensor.push(stamp, values)

    # -- tick -----------------------------------------------------------------------------------
    def tick(self, now: float) -> TickResult:
        result = self._evaluate(now)
        self.safety.update(result.reason, result.detail)
        return result

    def _evaluate(self, now: float) -> TickResult:
        if self.features.instruction is None:
            return TickResult(None, StopReason.NO_INSTRUCTION)
        cached = self.features.latest()
        if cached is None:
            reason = StopReason.NO_FEATURES if self.features.updates == 0 else StopReason.INSTRUCTION_CHANGED
            return TickResult(None, reason)
        age = now - cached.source_stamp
        if age > self.max_feature_age:
            return TickResult(None, StopReason.FEATURES_STALE, f"age {age:.2f} s > {self.max_feature_age} s", age)
        window = self.sensor.window(self.spec.sensor_window, now, self.max_sensor_gap)
        if window.status is WindowStatus.INCOMPLETE:
            return TickResult(None, StopReason.WINDOW_INCOMPLETE, f"{len(self.sensor)} samples", age)
        if window.status is WindowStatus.GAP:
            return TickResult(None, StopReason.SENSOR_GAP,
                              f"gap {window.largest_gap * 1e3:.0f} ms > {self.max_sensor_gap * 1e3:.0f} ms", age)
        start = time.monotonic()
        try:
            actions = self.backend.run(cached.features[-1:].reshape(1, -1), window.values[None])
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
        return TickResult(chunk, StopReason.NONE, "", age)
