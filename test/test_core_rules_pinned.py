"""Rules of the action core and the motion history that a mutation run of core/ found unpinned
(docs/mutation/report.md), each pinned by what a caller sees: every stop's reason, detail and
feature age; counters; the chunk's step and dtype; what enters the motion history; exact arcs at
coarse steps; twist mapping and the yaw-rate source."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from test_action_pipeline import DT, T0, make_core

from mobile_vla_ros.core.action_pipeline import ActionExpertCore
from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.core.motion import MotionHistory, sample_yaw_rate, twist_components
from mobile_vla_ros.core.safety import StopReason
from mobile_vla_ros.core.sensor_window import PushResult
from mobile_vla_ros.paths import default_model_dir

SAMPLE = [0.0, 0.0, 0.0, 0.0, 0.0, 9.81]


class Backend:
    """A backend with a chosen answer: a fixed output, an exception, or wrong shapes."""

    name = "chosen"

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def run(self, *inputs):
        self.calls.append([np.array(x) for x in inputs])
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def ready_core(answer, spec: ModelSpec | None = None, n: int = 100) -> ActionExpertCore:
    spec = spec or ModelSpec.load(default_model_dir())
    core = ActionExpertCore(spec, Backend(answer), max_feature_age=1.0, max_sensor_gap=0.05)
    core.on_instruction("go", now=T0)
    core.on_features(np.ones((spec.feature_tokens, spec.feature_dim), np.float32), source_stamp=T0, now=T0)
    for i in range(n):
        core.on_sensor(T0 + i * DT, SAMPLE, now=T0 + i * DT)
    return core


GOOD = np.full((1, 8, 2), 0.25, np.float64)
NEWEST = T0 + 99 * DT


def test_a_running_tick_gives_a_float32_chunk_with_the_models_step_no_detail_and_the_motion():
    core = ready_core(GOOD)
    r = core.tick(NEWEST)
    assert r.reason is StopReason.NONE and r.detail == "" and r.feature_age == pytest.approx(NEWEST - T0)
    assert r.chunk.dt == core.spec.action_dt and r.chunk.actions.dtype == np.float32
    assert r.motion.shape == (4,) and r.motion[0] == pytest.approx(NEWEST - T0)
    assert len(core.latency) == 1 and 0.0 <= core.latency.percentile_ms(50) < 1000.0


@pytest.mark.parametrize(("answer", "reason", "detail"), [
    (RuntimeError("CUDA error"), StopReason.INFERENCE_ERROR, "RuntimeError: CUDA error"),
    (np.zeros((1, 4, 2)), StopReason.INFERENCE_ERROR, "output shape expected [1, 8, 2], got [1, 4, 2]"),
    (np.full((1, 8, 2), np.nan), StopReason.NON_FINITE_OUTPUT, ""),
])
def test_a_failing_model_stops_with_its_detail_and_counts_each_failure(answer, reason, detail):
    core = ready_core(answer)
    for k in (1, 2):
        r = core.tick(NEWEST)
        assert (r.reason, r.detail, r.chunk) == (reason, detail, None)
        assert r.feature_age == pytest.approx(NEWEST - T0)
        assert core.inference_errors == (k if reason is StopReason.INFERENCE_ERROR else 0)


def test_every_gate_stop_carries_its_detail_and_the_feature_age():
    core = ready_core(GOOD)
    r = core.tick(T0 + 1.5)  # features 1.5 s old, max 1.0
    assert (r.reason, r.detail, r.feature_age) == (StopReason.FEATURES_STALE, "age 1.50 s > 1.0 s",
                                                   pytest.approx(1.5))
    core = ready_core(GOOD, n=10)
    now = T0 + 9 * DT
    r = core.tick(now)
    assert (r.reason, r.detail, r.feature_age) == (StopReason.WINDOW_INCOMPLETE, "10 samples", pytest.approx(now - T0))
    core = ready_core(GOOD)
    now = NEWEST + 0.08
    r = core.tick(now)
    assert (r.reason, r.detail, r.feature_age) == (StopReason.SENSOR_GAP, "gap 80 ms > 50 ms", pytest.approx(now - T0))
    spec = ModelSpec.load(default_model_dir())
    core = ActionExpertCore(spec, Backend(GOOD), max_feature_age=1.0, max_sensor_gap=0.05)
    core.clock.backward = core.clock.forward = float("inf")  # the gates alone, no jump detection
    core.on_instruction("go", now=T0 - 2.0)
    core.on_features(np.ones((1, 64), np.float32), source_stamp=T0 - 1.0, now=T0 - 1.0)
    for i in range(100):
        core.on_sensor(T0 + i * DT, SAMPLE, now=T0 + i * DT)
    now = NEWEST - 0.7  # the newest sample lies 0.7 s ahead of the clock; the features are 0.45 s old
    r = core.tick(now)
    assert r.reason is StopReason.FROM_THE_FUTURE and r.detail == "newest sensor sample 0.70 s ahead of the clock"
    assert r.feature_age == pytest.approx(now - (T0 - 1.0))


def test_features_exactly_at_the_accepted_clock_offset_pass_and_beyond_it_stop():
    core = ready_core(GOOD)
    core.clock.backward = core.clock.forward = float("inf")
    core.on_features(np.ones((1, 64), np.float32), source_stamp=NEWEST + 0.5, now=NEWEST)  # 0.5 s ahead: accepted
    assert core.tick(NEWEST).chunk is not None
    core.on_features(np.ones((1, 64), np.float32), source_stamp=NEWEST + 0.5, now=NEWEST)
    r = core.tick(NEWEST - 0.01)  # now 0.51 s ahead
    assert r.reason is StopReason.FROM_THE_FUTURE and r.detail == "VL features 0.51 s ahead of the clock"


def test_feature_rejections_name_their_reason():
    core = ready_core(GOOD)
    bad = np.full((1, 64), np.nan, np.float32)
    assert core.on_features(bad, source_stamp=NEWEST, now=NEWEST) == "vl_features: non-finite values"
    core.on_instruction("new", now=NEWEST)
    assert core.on_features(np.ones((1, 64), np.float32), source_stamp=NEWEST - 0.01, now=NEWEST) == \
        "vl_features: computed before the current instruction arrived"


def test_rejected_samples_are_counted_each_and_never_enter_the_motion_history():
    core = ready_core(GOOD)
    n = len(core.motion)
    assert core.on_sensor(0.0, SAMPLE, now=NEWEST) is PushResult.ZERO_STAMP
    assert core.on_sensor(0.0, SAMPLE, now=NEWEST) is PushResult.ZERO_STAMP
    assert core.sensor.counts[PushResult.ZERO_STAMP] == 2
    assert core.on_sensor(T0, SAMPLE, now=NEWEST) is PushResult.OUT_OF_ORDER
    assert len(core.motion) == n


def test_a_two_input_model_gets_no_motion_and_the_last_token_of_multi_token_features():
    spec = dataclasses.replace(ModelSpec.load(default_model_dir()), motion_input=None, feature_tokens=2)
    core = ActionExpertCore(spec, Backend(GOOD), max_feature_age=1.0, max_sensor_gap=0.05)
    assert core.motion is None
    core.on_instruction("go", now=T0)
    tokens = np.stack([np.zeros(64, np.float32), np.arange(64, dtype=np.float32)])
    core.on_features(tokens, source_stamp=T0, now=T0)
    for i in range(100):
        core.on_sensor(T0 + i * DT, SAMPLE, now=T0 + i * DT)
    r = core.tick(NEWEST)
    assert r.chunk is not None and r.motion is None
    fed = core.backend.calls[-1]
    assert len(fed) == 2 and fed[0].shape == (1, 64) and np.array_equal(fed[0][0], tokens[1])


def test_the_motion_input_uses_the_gyro_and_no_forward_motion_before_any_command():
    core = make_core()
    core.on_instruction("go", now=T0)
    core.on_features(np.zeros((1, 64), np.float32), source_stamp=T0, now=T0)
    for i in range(651):  # 1 s turning at 0.5 rad/s on the gyro; the commanded rate says 0
        core.on_sensor(T0 + i * DT, [0.0, 0.0, 0.5, 0.0, 0.0, 9.81], now=T0 + i * DT)
    r = core.tick(T0 + 650 * DT)
    _, dx, dy, dyaw = r.motion
    assert dyaw == pytest.approx(0.5, abs=1e-3) and dx == 0.0 and dy == 0.0


def test_a_wrench_robot_turns_by_its_commanded_yaw_rate():
    spec = dataclasses.replace(ModelSpec.load(default_model_dir()), sensor_type="wrench")
    core = ActionExpertCore(spec, Backend(GOOD), max_feature_age=2.0, max_sensor_gap=0.05)
    core.on_executed(np.array([0.0, 0.4], np.float32))
    for i in range(651):
        core.on_sensor(T0 + i * DT, [0.0, 0.0, -20.0, 0.0, 0.0, 0.0], now=T0 + i * DT)
    assert core.motion.motion_since(T0, T0 + 1.0)[3] == pytest.approx(0.4, abs=1e-3)


def test_after_a_jump_exactly_one_window_of_fresh_samples_resumes_and_later_stops_keep_their_reason():
    core = ready_core(GOOD)
    t = T0 + 50.0
    core.clock_jumped(t)
    core.on_features(np.ones((1, 64), np.float32), source_stamp=t, now=t)
    for i in range(65):  # exactly one window
        core.on_sensor(t + i * DT, SAMPLE, now=t + i * DT)
    assert core.tick(t + 64 * DT).chunk is not None
    core.on_instruction("another", now=t + 0.2)
    assert core.tick(t + 64 * DT + 0.01).reason is StopReason.INSTRUCTION_CHANGED  # not still "clock jumped"


def test_twist_mapping_picks_forward_and_yaw_rate_by_field_name():
    a = np.array([0.3, -0.7], np.float32)
    assert twist_components(a, ["linear.x", "angular.z"]) == pytest.approx((0.3, -0.7))
    assert twist_components(a, ["angular.z", "linear.x"]) == pytest.approx((-0.7, 0.3))
    assert twist_components(a, ["linear.x", ""]) == pytest.approx((0.3, 0.0))
    assert twist_components(a, ["", "angular.z"]) == pytest.approx((0.0, -0.7))


def test_the_yaw_rate_comes_from_the_gyro_for_an_imu_and_from_the_command_otherwise():
    sample = [0.1, 0.2, 0.9, 0.0, 0.0, 9.81]
    assert sample_yaw_rate("imu", sample, 0.4) == pytest.approx(0.9)
    assert sample_yaw_rate("wrench", sample, 0.4) == pytest.approx(0.4)


def test_motion_history_rejects_non_positive_settings_and_accepts_small_positive_ones():
    for horizon, hz in ((0.0, 650.0), (1.0, 0.0)):
        with pytest.raises(ValueError, match=rf"^horizon and sample_hz must be > 0, got {horizon} and {hz}$"):
            MotionHistory(horizon, hz)
    assert len(MotionHistory(0.5, 0.5)) == 0


@pytest.mark.parametrize("streamed", [True, False])
def test_coarse_arcs_are_exact(streamed):
    """Samples 1 s apart at 0.5 rad/s and 1 m/s: each step is an exact arc (a midpoint rule, or the
    straight-line branch used beyond tiny turns, would be off by ~5 mm)."""
    h = MotionHistory(10.0, 1.0)
    times, rate, speed = [0.0, 1.0, 2.0], 0.5, 1.0
    if streamed:
        for t in times:
            h.add(t, rate, speed)
    else:
        h.extend(times, rate, speed)
    _, dx, dy, dyaw = h.motion_since(0.0, 2.0)  # float32: exact to ~1e-7
    assert dyaw == pytest.approx(1.0, abs=1e-6)
    assert dx == pytest.approx(math.sin(1.0) / 0.5, abs=1e-6)
    assert dy == pytest.approx((1 - math.cos(1.0)) / 0.5, abs=1e-6)


@pytest.mark.parametrize("streamed", [True, False])
def test_samples_at_or_before_the_newest_time_are_ignored(streamed):
    h = MotionHistory(10.0, 10.0)
    h.extend([1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
    if streamed:
        h.add(2.0, 5.0, 5.0)
        h.add(1.5, 5.0, 5.0)
    else:
        h.extend([1.5, 2.0, 3.0], [5.0, 5.0, 0.0], [5.0, 5.0, 1.0])
    assert len(h) == (2 if streamed else 3)
    assert h.motion_since(1.0, 3.0 if not streamed else 2.0)[1] == pytest.approx(2.0 if not streamed else 1.0)


# -- sensor window ------------------------------------------------------------------------------
def test_sensor_window_settings_and_counts():
    from mobile_vla_ros.core.sensor_window import SensorWindow

    assert len(SensorWindow(1, 1)) == 0  # the smallest valid window
    for channels, capacity in ((0, 5), (1, 0)):
        with pytest.raises(ValueError, match=rf"^channels and capacity must be >= 1, got {channels} and {capacity}$"):
            SensorWindow(channels, capacity)
    w = SensorWindow(2, 4, limits=[1.0, 1.0])
    assert w.push(1.0, [1.0, -1.0]) is PushResult.ACCEPTED  # exactly at the limit: accepted
    assert w.push(2.0, [1.0001, 0.0]) is PushResult.OUT_OF_RANGE
    assert w.push(2.0, [0.0, 0.0]) is PushResult.ACCEPTED
    assert w.counts[PushResult.ACCEPTED] == 2
    with pytest.raises(ValueError, match=r"^window of 5 samples asked from a buffer of 4$"):
        w.window(5, 2.0, 1.0)


def test_window_gaps_for_one_and_two_samples_and_the_ahead_boundary():
    from mobile_vla_ros.core.sensor_window import SensorWindow, WindowStatus

    w = SensorWindow(1, 4)
    w.push(10.0, [0.0])
    one = w.window(1, 10.01, max_gap=0.05)
    assert one.status is WindowStatus.OK and one.largest_gap == pytest.approx(0.01)
    w.push(10.2, [0.0])  # 0.2 s between the two samples
    assert w.window(2, 10.2, max_gap=0.05).status is WindowStatus.GAP
    assert w.window(2, 10.2, max_gap=0.25).largest_gap == pytest.approx(0.2)
    assert w.window(1, 10.2 - 0.5, max_gap=1.0, max_ahead=0.5).status is WindowStatus.OK  # exactly 0.5 ahead


# -- scheduling -----------------------------------------------------------------------------------
def test_period_from_hz_below_one_hz():
    from mobile_vla_ros.core.scheduling import period_from_hz

    assert period_from_hz(0.5) == 2.0


def test_worker_counts_names_its_thread_waits_and_catches_up_only_after_a_skip():
    import threading
    import time

    from mobile_vla_ros.core.scheduling import SingleFlightWorker

    retick = []
    worker = SingleFlightWorker("vlm_forward", on_idle_after_skip=lambda: retick.append(1))
    names = []
    assert worker.try_submit(lambda: names.append(threading.current_thread().name), lambda r, e: None)
    assert worker.wait_idle(5) and retick == []  # nothing was skipped: no catch-up
    assert names[0].startswith("vlm_forward")
    release = threading.Event()
    assert worker.try_submit(lambda: release.wait(5), lambda r, e: None)
    assert not worker.try_submit(lambda: None, lambda r, e: None)  # skipped while busy
    assert not worker.wait_idle(0.05)  # still busy: False on timeout
    release.set()
    assert worker.wait_idle(5)
    deadline = time.monotonic() + 5
    while not retick and time.monotonic() < deadline:
        time.sleep(0.001)
    assert retick == [1] and worker.submitted == 2 and worker.skipped_busy == 1
    worker.try_submit(lambda: 1 / 0, lambda r, e: None)
    worker.wait_idle(5)
    worker.try_submit(lambda: 1 / 0, lambda r, e: None)
    worker.wait_idle(5)
    assert worker.failed == 2 and worker.submitted == 4
    done, started = [], threading.Event()
    worker.try_submit(lambda: (started.set(), time.sleep(0.1), done.append(1)), lambda r, e: None)
    assert started.wait(5)
    worker.shutdown()  # waits for the running job (one not yet started would be cancelled)
    assert done == [1]
    assert SingleFlightWorker().try_submit(lambda: names.append(threading.current_thread().name),
                                           lambda r, e: None)
    time.sleep(0.05)
    assert names[-1].startswith("worker")


# -- VLM schedule -----------------------------------------------------------------------------------
def test_frame_age_boundaries_and_the_frame_at_the_instructions_instant():
    from mobile_vla_ros.core.vlm_schedule import CameraFrame, VlmScheduler

    rgb = np.zeros((2, 2, 3), np.uint8)
    s = VlmScheduler(max_image_age=0.5)
    s.set_instruction("go", now=10.0)
    assert s.select(now=10.0) == (None, "no images yet")
    assert s.add_frame("camera", CameraFrame(rgb, 10.0, "camera"))  # captured at the instant it arrived
    inputs, why = s.select(now=10.5)  # exactly max_image_age old: used
    assert inputs is not None and why == ""
    assert s.select(now=10.0 - 0.5)[0] is not None  # exactly 0.5 s ahead of the clock: used


def test_virtual_time_vlm_reports_its_forwards_and_catches_up_once():
    from mobile_vla_ros.core.vlm_schedule import CameraFrame, VirtualTimeVlm, VlmScheduler

    rgb = np.zeros((2, 2, 3), np.uint8)
    calls = []

    def extract(images, text):
        calls.append(len(images))
        return np.ones((1, 4), np.float64)  # float64 from the extractor: float32 features

    vlm = VirtualTimeVlm(VlmScheduler(max_image_age=10.0), extract, latency=1.0)
    vlm.tick(0.0)
    vlm.tick(0.1)
    assert vlm.counts["skipped_no_input"] == 2
    vlm.schedule.set_instruction("go", now=0.0)
    vlm.add_frame("front", CameraFrame(rgb, 0.2, "front"), now=0.2)  # first usable frame: starts now
    vlm.add_frame("rear", CameraFrame(rgb, 0.3, "rear"), now=0.3)  # busy: not started
    vlm.tick(0.5)  # skipped: busy
    done = vlm.finish()
    assert (done.ready, done.current, done.features.dtype) == (1.2, True, np.float32)
    assert vlm.pending is not None and vlm.pending[0] == pytest.approx(2.2)  # the catch-up started at 1.2
    assert calls == [1, 2]  # the catch-up used both cameras
    vlm.finish()
    assert vlm.pending is None  # nothing skipped during the catch-up: no second one
    vlm.add_frame("front", CameraFrame(rgb, 2.5, "front"), now=2.5)  # not the first frame of an instruction
    assert vlm.pending is None
    assert len(vlm.forward_seconds) == 2 and all(0.0 <= s < 1.0 for s in vlm.forward_seconds)


# -- backends and model.yaml ---------------------------------------------------------------------
def test_each_backend_by_name_takes_the_gpu_when_there_is_one_and_auto_falls_back_to_onnxruntime():
    import onnxruntime
    import torch

    from mobile_vla_ros.core.backend_factory import create_backend
    from mobile_vla_ros.core.backends import OnnxRuntimeBackend, tensorrt_usable

    spec = ModelSpec.load(default_model_dir())
    f = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((1, 65, 6)).astype(np.float32)
    m = np.zeros((1, 4), np.float32)
    ort_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    ort = create_backend("onnxruntime", default_model_dir(), spec)
    torch_backend = create_backend("torch", default_model_dir(), spec)
    assert ort.name == "onnxruntime-" + ("cuda" if ort_gpu else "cpu")
    assert torch_backend.name == "torch-" + ("cuda" if torch.cuda.is_available() else "cpu")
    assert ort._session.get_providers() == ["CUDAExecutionProvider"] * ort_gpu + ["CPUExecutionProvider"]
    cpu_only = OnnxRuntimeBackend(default_model_dir(), spec, use_cuda=False)
    assert cpu_only.name == "onnxruntime-cpu" and cpu_only._session.get_providers() == ["CPUExecutionProvider"]
    # float32 on a CPU agrees to 1e-4; a GPU's TF32 matmuls to about 3e-4 relative
    np.testing.assert_allclose(torch_backend.run(f, w, m), ort.run(f, w, m), rtol=1e-3, atol=1e-4)
    if not tensorrt_usable():
        assert create_backend("auto", default_model_dir(), spec).name == ort.name


def test_when_no_backend_can_run_the_model_the_error_lists_each_reason(tmp_path):
    import shutil

    from mobile_vla_ros.core.backend_factory import create_backend
    from mobile_vla_ros.core.backends import BackendUnavailable, tensorrt_usable

    if tensorrt_usable():
        pytest.skip("TensorRT would be tried first on this machine")
    model = tmp_path / "model"
    model.mkdir()
    shutil.copy(default_model_dir() / "model.yaml", model)  # neither the ONNX graph nor the checkpoint
    spec = ModelSpec.load(model)
    with pytest.raises(BackendUnavailable) as err:
        create_backend("auto", model, spec)
    assert str(err.value) == (f"no backend can run this model: tensorrt: not installed; onnxruntime: "
                              f"{model / 'action_expert.onnx'}: missing; torch: {model / 'action_expert.pt'}: "
                              "missing (the torch backend needs the checkpoint)")


def test_tensorrt_counts_as_usable_only_with_its_runtime_and_a_cuda_binding(tmp_path, monkeypatch):
    """Directories that stand in for installed packages: the rule reads what is importable."""
    import importlib
    import sys

    from mobile_vla_ros.core.backends import tensorrt_installed, tensorrt_usable

    for name in ("tensorrt", "pycuda"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.pyi").write_text("")  # type stubs only: no runtime
    importlib.invalidate_caches()
    if importlib.util.find_spec("tensorrt").origin is None:  # ours, not a real TensorRT further up the path
        assert not tensorrt_installed() and not tensorrt_usable()
    (tmp_path / "tensorrt" / "__init__.py").write_text("")
    importlib.invalidate_caches()
    assert tensorrt_installed()
    has_binding = any(importlib.util.find_spec(b) is not None for b in ("cuda", "pycuda"))
    assert tensorrt_usable() is has_binding
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    importlib.invalidate_caches()
    assert tensorrt_usable()


def test_model_yaml_round_trips_with_its_field_names(tmp_path):
    import yaml

    spec = ModelSpec.load(default_model_dir())
    raw = spec.to_yaml_dict()
    assert raw["format_version"] == 1 and raw["name"] == spec.name and raw["feature_tokens"] == 1
    assert raw["sensor_channels"] == 6 and raw["vlm"] == {"backend": spec.vlm_backend, "pooling": spec.vlm_pooling}
    assert raw["training"] == {"staleness_range": list(spec.staleness_range)}
    assert "motion_mean" in raw["normalization"]
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(raw))
    assert ModelSpec.load(tmp_path) == spec
    plain = dataclasses.replace(spec.normalization, motion_mean=[], motion_std=[])
    two_input = dataclasses.replace(spec, motion_input=None, normalization=plain)
    assert "motion_mean" not in two_input.to_yaml_dict()["normalization"]  # no empty motion entries


# -- found by the mutation run of 2026-11-30 -------------------------------------------------------

def test_a_stop_reaches_the_safety_state_with_its_detail():
    """/diagnostics shows `safety.describe()`: the tick's stop with its detail, not the reason alone."""
    core = ready_core(GOOD)
    r = core.tick(NEWEST + 1.5)  # features 1.65 s old, max_feature_age 1 s
    assert r.reason is StopReason.FEATURES_STALE and r.detail
    assert core.safety.detail == r.detail and core.safety.describe() == f"{r.reason.value} ({r.detail})"


def test_a_fresh_safety_state_has_an_empty_detail():
    """The detail goes into a DiagnosticStatus string field: never None."""
    from mobile_vla_ros.core.safety import SafetyState

    assert SafetyState().detail == ""


def test_a_sensor_gap_detail_states_both_durations_in_ms():
    core = ready_core(GOOD, n=40)
    core.set_limits(max_feature_age=5.0, max_sensor_gap=0.6)
    later = T0 + 39 * DT + 1.5  # a 1.5 s gap, then a full window's worth of samples
    for i in range(40):
        core.on_sensor(later + i * DT, SAMPLE, now=later + i * DT)
    r = core.tick(later + 39 * DT)
    assert r.reason is StopReason.SENSOR_GAP and r.detail == "gap 1500 ms > 600 ms"


def test_raising_max_feature_age_live_keeps_the_motion_since_older_images():
    """The motion history keeps max_feature_age + 1 s: raised live, features 5 s old still get
    the whole turn since their image, not the part the old horizon kept."""
    core = make_core()
    core.set_limits(max_feature_age=6.0, max_sensor_gap=0.05)
    core.on_instruction("go", now=T0)
    core.on_features(np.zeros((1, 64), np.float32), source_stamp=T0, now=T0)
    n = int(5.0 * 650) + 1
    for i in range(n):  # 5 s turning at 0.5 rad/s
        core.on_sensor(T0 + i * DT, [0.0, 0.0, 0.5, 0.0, 0.0, 9.81], now=T0 + i * DT)
    r = core.tick(T0 + (n - 1) * DT)
    assert r.chunk is not None and r.motion[3] == pytest.approx(2.5, abs=5e-3)


def test_after_a_reported_jump_the_next_reading_is_compared_with_the_jumps_time():
    """The node reports rclpy's time jumps with `clock_jumped(now)`; a reading far before that time
    is another backward jump."""
    core = ready_core(GOOD)
    core.clock_jumped(T0 + 50.0)
    assert core.watch_clock(T0 + 10.0) == "backward"


def test_a_wrench_robot_counts_no_turn_before_any_command_and_none_after_a_jump():
    """Without a gyro the yaw comes from the executed command: zero until one is executed, and zero
    again after a clock jump (the node commands zero then)."""
    spec = dataclasses.replace(ModelSpec.load(default_model_dir()), sensor_type="wrench")
    wrench = [0.0, 0.0, -20.0, 0.0, 0.0, 0.0]
    core = ActionExpertCore(spec, Backend(GOOD), max_feature_age=2.0, max_sensor_gap=0.05)
    for i in range(651):
        core.on_sensor(T0 + i * DT, wrench, now=T0 + i * DT)
    assert core.motion.motion_since(T0, T0 + 1.0)[3] == 0.0
    core.on_executed(np.array([0.0, 0.4], np.float32))
    t = T0 + 60.0
    core.clock_jumped(t)
    for i in range(651):
        core.on_sensor(t + i * DT, wrench, now=t + i * DT)
    assert core.motion.motion_since(t, t + 1.0)[3] == 0.0


def test_the_executor_counts_exactly_the_values_it_clamped():
    from mobile_vla_ros.core.chunk_executor import ActionChunk, ChunkExecutor

    executor = ChunkExecutor(2, limits=[0.5, 1.0], max_step=[10.0, 10.0])
    executor.set_chunk(ActionChunk(T0, 0.1, np.array([[0.7, -1.5], [0.1, 0.2]], np.float32)))
    assert executor.command(T0).tolist() == pytest.approx([0.5, -1.0]) and executor.clamped_values == 2
    executor.command(T0 + 0.1)
    assert executor.clamped_values == 2  # the second step is within the limits


def test_feature_age_limit_is_twice_the_latency_plus_a_period_never_below_the_default():
    from mobile_vla_ros.core.params import ACTION_NODE_PARAMS, spec_by_name
    from mobile_vla_ros.core.safety import feature_age_limit

    default = float(spec_by_name(ACTION_NODE_PARAMS)["max_feature_age"].default)
    assert feature_age_limit(0.0, 3.33) == default
    assert feature_age_limit(1.5, 0.59) == pytest.approx(2 * 1.5 + 1 / 0.59)
    assert feature_age_limit(default, 4.0) == pytest.approx(2 * default + 0.25)


def test_bag_topics_are_absolute_names():
    from mobile_vla_ros.core.names import bag_topic

    assert bag_topic("cmd_vel") == "/cmd_vel" and bag_topic("/robot1/cmd_vel") == "/robot1/cmd_vel"


@pytest.mark.system
def test_the_worker_reports_idle_promptly_and_shuts_down_without_waiting_when_asked():
    import threading
    import time

    from mobile_vla_ros.core.scheduling import SingleFlightWorker

    worker = SingleFlightWorker("pinned")
    release = threading.Event()
    assert worker.try_submit(release.wait, lambda result, error: None)
    began = time.monotonic()
    threading.Timer(0.05, release.set).start()
    assert worker.wait_idle(timeout=5.0) and time.monotonic() - began < 0.5  # polls in ms, not seconds
    release.clear()
    assert worker.try_submit(release.wait, lambda result, error: None)
    closer = threading.Thread(target=worker.shutdown, kwargs={"wait": False})
    closer.start()
    closer.join(timeout=2.0)
    returned = not closer.is_alive()
    release.set()  # let the job end either way
    assert returned  # shutdown(wait=False) does not wait for the running job


def test_the_motion_history_trims_to_its_horizon_and_keeps_the_sample_before_it():
    """Ring trimming, many times over: the motion since exactly `horizon` ago is still exact (the
    sample at or before that time is kept for the interpolation), and the oldest time is that sample."""
    history = MotionHistory(horizon=0.5, sample_hz=100.0)  # room for 150 samples: trims every ~100
    times = np.arange(1, 1001) * 0.01  # 10 s turning at 1 rad/s
    turned = []
    for t in times:
        history.add(float(t), 1.0, 0.0)
        if t >= 0.51:  # after every sample, also right after each trim
            turned.append(history.motion_since(t - 0.5, t)[3])
            assert history.oldest_time() <= t - 0.5 + 1e-9
    assert np.allclose(turned, 0.5, atol=1e-6) and len(history) <= 150


def test_a_batch_longer_than_the_buffer_grows_it_and_keeps_every_sample():
    history = MotionHistory(horizon=0.5, sample_hz=100.0)
    times = np.arange(1, 2001) * 0.01  # 2000 samples in one call (training appends whole recordings)
    history.extend(times, np.full(times.shape, 0.5), np.zeros(times.shape))
    assert history.oldest_time() <= times[0] and len(history) >= 2000
    assert history.motion_since(times[0], times[-1])[3] == pytest.approx(0.5 * (times[-1] - times[0]), rel=1e-6)


def test_motion_since_keeps_the_query_shape_with_and_without_history():
    """Training asks for many (image time, now) pairs at once: [N] in, [N, 4] float32 out, also
    before any sample (zero motion, the ages)."""
    empty = MotionHistory(horizon=2.0, sample_hz=100.0)
    t_image = np.array([0.1, 0.2, 0.3])
    out = empty.motion_since(t_image, 0.5)
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[:, 0] == pytest.approx([0.4, 0.3, 0.2]) and not out[:, 1:].any()
    history = MotionHistory(horizon=2.0, sample_hz=100.0)
    for k in range(1, 101):
        history.add(k * 0.01, 1.0, 0.0)
    out = history.motion_since(t_image, np.array([0.5, 0.5, 0.5]))
    assert out.shape == (3, 4) and out.dtype == np.float32
    assert out[:, 3] == pytest.approx([0.4, 0.3, 0.2], abs=1e-6)


def test_commands_held_at_times_with_no_commands_are_zero_of_the_commands_width():
    from mobile_vla_ros.core.motion import command_at

    held = command_at(np.array([0.1, 0.2, 0.3]), np.array([]), np.zeros((0, 2)))
    assert held.shape == (3, 2) and not held.any()
    held = command_at(np.array([0.1, 0.2, 0.3]), np.array([0.15]), np.array([[0.3, -0.5]]))
    assert held.tolist() == [[0.0, 0.0], [0.3, -0.5], [0.3, -0.5]]


@pytest.mark.parametrize("module, backend, install", [("onnxruntime", "onnxruntime", "pip install onnxruntime"),
                                                      ("torch", "torch", "torch is not installed")])
def test_a_backend_whose_library_is_missing_says_what_to_install(monkeypatch, module, backend, install):
    """A None entry in sys.modules is how Python itself marks a module as not importable."""
    import sys

    from mobile_vla_ros.core.backend_factory import create_backend
    from mobile_vla_ros.core.backends import BackendUnavailable

    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(BackendUnavailable, match=install):
        create_backend(backend, default_model_dir(), ModelSpec.load(default_model_dir()))


def test_a_torch_checkpoint_that_does_not_match_model_yaml_names_each_difference():
    from mobile_vla_ros.core.backends import TorchBackend
    from mobile_vla_ros.core.model_spec import ModelSpecError

    spec = dataclasses.replace(ModelSpec.load(default_model_dir()), feature_dim=32, chunk_size=4)
    with pytest.raises(ModelSpecError) as err:
        TorchBackend(default_model_dir(), spec, device="cpu")
    assert str(err.value).endswith("does not match model.yaml: feature_dim: expected 32 (model.yaml), got 64; "
                                   "chunk_size: expected 4 (model.yaml), got 8")


def test_tensorrt_with_only_cuda_python_counts_as_usable(tmp_path, monkeypatch):
    import importlib
    import sys

    from mobile_vla_ros.core.backends import tensorrt_usable

    for name in ("tensorrt", "cuda"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setitem(sys.modules, "pycuda", None)  # not importable, whatever is installed
    monkeypatch.syspath_prepend(str(tmp_path))
    for package in ("tensorrt", "cuda"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    importlib.invalidate_caches()
    assert tensorrt_usable()


def _shipped_yaml() -> dict:
    import yaml

    return yaml.safe_load((default_model_dir() / "model.yaml").read_text())


def _edited(edit) -> dict:
    raw = _shipped_yaml()
    edit(raw)
    return raw


MODEL_YAML_ERRORS = [
    (lambda r: r.update(format_version=2), "format_version expected 1, got 2"),
    (lambda r: r.pop("sensor_type"), "missing key 'sensor_type'"),
    (lambda r: r.update(sensor_type="lidar"), "sensor_type expected one of ['imu', 'wrench'], got 'lidar'"),
    (lambda r: r.update(feature_dim="64"), "'feature_dim' expected int, got '64'"),
    (lambda r: r.update(chunk_size=True), "'chunk_size' expected int, got True"),
    (lambda r: r.update(sensor_hz="fast"), "'sensor_hz' expected int or float, got 'fast'"),
    (lambda r: r["normalization"].pop("action_std"), "missing key 'normalization.action_std'"),
    (lambda r: r["normalization"].update(sensor_mean=3.0), "'normalization.sensor_mean' expected list, got 3.0"),
    (lambda r: r["normalization"].update(action_mean=[0.0]), "normalization.action_mean expected 2 values, got 1"),
    (lambda r: r["normalization"].update(motion_std=[1.0] * 3), "normalization.motion_std expected 4 values, got 3"),
    (lambda r: r.update(sensor_channels=7), "sensor_channels expected 6 for sensor_type imu, got 7"),
    (lambda r: r.update(motion_input=["motion_since_image"]),
     "motion_input expected a mapping with a 'name', got ['motion_since_image']"),
    (lambda r: r.update(motion_input={"layout": []}),
     "motion_input expected a mapping with a 'name', got {'layout': []}"),
    (lambda r: r["motion_input"].update(layout=["dx_m"]),
     "motion_input.layout expected ['feature_age_s', 'dx_m', 'dy_m', 'dyaw_rad'], got ['dx_m']"),
]


@pytest.mark.parametrize("edit, message", MODEL_YAML_ERRORS)
def test_a_wrong_model_yaml_names_the_field_what_was_expected_and_what_it_got(edit, message):
    from mobile_vla_ros.core.model_spec import ModelSpecError

    with pytest.raises(ModelSpecError) as err:
        ModelSpec.from_dict(_edited(edit), source="m/model.yaml")
    assert str(err.value) == f"m/model.yaml: {message}"


def test_optional_model_yaml_fields_take_their_documented_defaults():
    def strip(r):
        for key in ("format_version", "name", "feature_tokens", "vlm", "training", "architecture", "notes",
                    "sensor_channels"):
            r.pop(key)
        r["motion_input"].pop("layout")

    spec = ModelSpec.from_dict(_edited(strip))
    assert (spec.name, spec.feature_tokens, spec.vlm_backend, spec.vlm_pooling) == ("", 1, "kosmos2", "last_token")
    assert spec.staleness_range == (0.0, 0.0) and spec.architecture == {} and spec.notes == ""
    assert spec.sensor_channels == 6 and spec.motion_input == "motion_since_image"
    empty = ModelSpec.from_dict(_edited(lambda r: r.update(vlm=None, training=None, architecture=None)))
    assert (empty.vlm_backend, empty.staleness_range, empty.architecture) == ("kosmos2", (0.0, 0.0), {})
    given = ModelSpec.from_dict(_edited(lambda r: r.update(vlm={"backend": "qwen2_5_vl", "pooling": "mean"})))
    assert (given.vlm_backend, given.vlm_pooling) == ("qwen2_5_vl", "mean")


def test_model_yaml_that_is_not_a_mapping_or_not_yaml_is_refused_with_its_path(tmp_path):
    from mobile_vla_ros.core.model_spec import ModelSpecError

    path = tmp_path / "model.yaml"
    path.write_text("- a\n- list\n")
    with pytest.raises(ModelSpecError, match=rf"^{path}: expected a mapping, got list$"):
        ModelSpec.load(tmp_path)
    path.write_text("a: [unclosed\n")
    with pytest.raises(ModelSpecError, match=rf"^{path}: not valid YAML \("):
        ModelSpec.load(tmp_path)
    path.unlink()
    with pytest.raises(ModelSpecError, match=rf"^{path}: missing \(a model directory needs model.yaml and "):
        ModelSpec.load(tmp_path)


def test_node_parameters_that_contradict_model_yaml_are_each_named():
    from mobile_vla_ros.core.model_spec import check_params

    spec = ModelSpec.load(default_model_dir())
    agree = {"sensor_type": "imu", "sensor_window": 65, "sensor_hz": 650.0 + 1e-7, "chunk_size": 8,
             "action_names": ("linear_x", "angular_z"), "action_dt": spec.action_dt, "vlm_backend": spec.vlm_backend,
             "feature_pooling": spec.vlm_pooling, "action_limits": [0.5, 1.0], "max_action_step": [0.1, 0.2],
             "twist_mapping": ["linear.x", "angular.z"], "unrelated": 3}
    assert check_params(spec, agree) == []
    assert check_params(spec, {}) == []
    wrong = {**agree, "sensor_hz": 600.0, "action_names": ["v"], "chunk_size": 4, "action_limits": [0.5]}
    assert check_params(spec, wrong) == [
        "sensor_hz: expected 650.0 (model.yaml), got 600.0 (node parameter)",
        "chunk_size: expected 8 (model.yaml), got 4 (node parameter)",
        "action_names: expected ['linear_x', 'angular_z'] (model.yaml), got ['v'] (node parameter)",
        f"action_limits: expected 2 values (one per action {spec.action_names}), got 1"]
