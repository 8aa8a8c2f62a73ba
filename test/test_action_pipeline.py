"""The per-tick pipeline the node runs: every stop reason, then a chunk from the real ONNX model."""

import numpy as np

from mobile_vla_ros.core.action_pipeline import ActionExpertCore
from mobile_vla_ros.core.backends import OnnxRuntimeBackend
from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.core.safety import StopReason
from mobile_vla_ros.core.sensor_window import PushResult
from mobile_vla_ros.paths import default_model_dir

DT = 1 / 650


def make_core(backend=None) -> ActionExpertCore:
    spec = ModelSpec.load(default_model_dir())
    return ActionExpertCore(spec, backend or OnnxRuntimeBackend(default_model_dir(), spec),
                            max_feature_age=1.0, max_sensor_gap=0.05)


T0 = 100.0  # stamps are seconds on the ROS clock; 0 means "unset" and is rejected


def feed_sensor(core, t0: float, n: int):
    for i in range(n):
        core.on_sensor(T0 + t0 + i * DT, [0.0, 0.0, 0.1, 0.0, 0.0, 9.81], now=T0 + t0 + i * DT)


def features(value: float = 0.5) -> np.ndarray:
    return np.full((1, 64), value, dtype=np.float32)


def test_stop_reasons_in_order_then_a_chunk():
    core = make_core()
    assert core.tick(T0).reason is StopReason.NO_INSTRUCTION
    core.on_instruction("go to the red cylinder", now=T0)
    assert core.tick(T0 + 0.1).reason is StopReason.NO_FEATURES
    assert core.on_features(features(), source_stamp=T0 + 0.2, now=T0 + 0.25) is None
    assert core.tick(T0 + 0.3).reason is StopReason.WINDOW_INCOMPLETE
    feed_sensor(core, 0.2, 100)
    now = T0 + 0.2 + 99 * DT
    result = core.tick(now)
    assert result.reason is StopReason.NONE and not core.safety.stopped
    assert result.chunk.actions.shape == (8, 2) and np.all(np.isfinite(result.chunk.actions))
    assert result.chunk.stamp == T0 + 0.2 + 99 * DT  # newest sensor sample of the window
    assert np.isclose(result.feature_age, now - (T0 + 0.2))
    assert core.tick(now + 0.2).reason is StopReason.SENSOR_GAP
    assert core.tick(T0 + 2.0).reason is StopReason.FEATURES_STALE  # stale features are checked first
    feed_sensor(core, 2.0, 70)
    assert core.tick(T0 + 2.0 + 69 * DT).reason is StopReason.FEATURES_STALE
    core.on_instruction("go to the blue box", now=T0 + 2.2)
    assert core.tick(T0 + 2.2).reason is StopReason.INSTRUCTION_CHANGED
    # One event per change into another stop (the core starts stopped for want of an instruction): no
    # features, incomplete window, gap, stale (twice in a row: once), instruction changed.
    assert core.safety.stop_events == 5


def test_features_with_wrong_shape_or_values_are_rejected():
    core = make_core()
    core.on_instruction("go", T0)
    assert "expected float32 [1, 64] (model.yaml), got float32 [1, 32]" in core.on_features(
        np.zeros((1, 32), np.float32), T0 + 1, now=T0 + 1)
    assert "float64" in core.on_features(np.zeros((1, 64)), T0 + 1, now=T0 + 1)
    assert "non-finite" in core.on_features(features(float("nan")), T0 + 1, now=T0 + 1)
    assert "zero_stamp" in core.on_features(features(), 0.0, now=T0 + 1)
    assert "future_stamp" in core.on_features(features(), T0 + 5, now=T0 + 1)
    assert core.rejected_features == 5 and core.features.latest() is None


def test_sensor_stamps_and_magnitudes_are_validated():
    core = make_core()
    ok = [0.0, 0.0, 0.1, 0.0, 0.0, 9.81]
    assert core.on_sensor(0.0, ok, now=T0) is PushResult.ZERO_STAMP
    assert core.on_sensor(T0 + 3, ok, now=T0) is PushResult.FUTURE_STAMP
    assert core.on_sensor(T0, [0, 0, 1e4, 0, 0, 9.81], now=T0) is PushResult.OUT_OF_RANGE
    assert core.on_sensor(T0, ok, now=T0) is PushResult.ACCEPTED
    assert core.on_sensor(T0 - 1, ok, now=T0) is PushResult.OUT_OF_ORDER
    assert core.sensor.counts[PushResult.ZERO_STAMP] == core.sensor.counts[PushResult.OUT_OF_RANGE] == 1


class _Broken:
    name = "broken"

    def __init__(self, output):
        self.output = output

    def run(self, *inputs):
        if isinstance(self.output, Exception):
            raise self.output
        return self.output


def test_inference_failures_and_non_finite_outputs_stop_instead_of_crashing():
    for backend, reason in ((_Broken(RuntimeError("CUDA error")), StopReason.INFERENCE_ERROR),
                            (_Broken(np.full((1, 8, 2), np.nan, np.float32)), StopReason.NON_FINITE_OUTPUT),
                            (_Broken(np.zeros((1, 4, 2), np.float32)), StopReason.INFERENCE_ERROR)):
        core = make_core(backend)
        core.on_instruction("go", T0)
        core.on_features(features(), T0, now=T0)
        feed_sensor(core, 0.0, 70)
        result = core.tick(T0 + 69 * DT)
        assert result.reason is reason and result.chunk is None
