"""Small core pieces the nodes report with or check by, pinned by behaviour: rate and latency
statistics, stop descriptions, instruction checks, ONNX shape messages, file hashes, wrench samples,
live limit changes of the action core."""

from __future__ import annotations

import hashlib
import math
from types import SimpleNamespace as NS

import numpy as np
import pytest
from test_action_pipeline import DT, T0, make_core

from mobile_vla_ros.core.model_spec import ModelSpec, check_onnx_io, file_sha256, input_shapes
from mobile_vla_ros.core.safety import SafetyState, StopReason
from mobile_vla_ros.core.sensor_window import wrench_sample
from mobile_vla_ros.core.stats import LatencyStats, RateMeter
from mobile_vla_ros.core.validation import check_instruction
from mobile_vla_ros.paths import default_model_dir


class FakeClock:
    """A settable monotonic clock: the statistics' time source, set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_rate_meter_counts_events_per_second_over_its_window_only():
    clock = FakeClock()
    meter = RateMeter(horizon=5.0, clock=clock)
    assert meter.rate() == 0.0
    meter.tick()
    assert meter.rate() == 0.0 and meter.total == 1  # one event is no rate
    for _ in range(10):
        clock.now += 0.1
        meter.tick()
    assert meter.rate() == pytest.approx(10.0) and meter.total == 11
    clock.now += 4.05  # the first event is now 5.05 s old: out of the window; the other ten are not
    assert meter.rate() == pytest.approx(10.0)  # (10 - 1) intervals over 0.9 s
    clock.now += 5.0
    assert meter.rate() == 0.0 and meter.total == 11  # all out of the window; the total stays


def test_latency_percentiles_in_milliseconds_over_the_newest_values():
    stats = LatencyStats(size=4)
    assert math.isnan(stats.percentile_ms(50))
    for s in (0.010, 0.020, 0.030, 0.040, 0.050):  # the first falls out (size 4)
        stats.add(s)
    assert len(stats) == 4
    assert stats.percentile_ms(0) == pytest.approx(20.0) and stats.percentile_ms(100) == pytest.approx(50.0)
    assert stats.percentile_ms(50) == pytest.approx(35.0)


def test_a_stop_describes_its_reason_and_detail():
    s = SafetyState()
    assert s.describe() == StopReason.NO_INSTRUCTION.value
    s.update(StopReason.SENSOR_GAP, "gap 80 ms > 50 ms")
    assert s.describe() == f"{StopReason.SENSOR_GAP.value} (gap 80 ms > 50 ms)"
    s.update(StopReason.NONE)
    assert s.describe() == StopReason.NONE.value and not s.stopped


def test_instructions_are_checked_for_emptiness_and_length():
    assert check_instruction("go", 2) is None
    assert check_instruction("", 10) == "empty instruction"
    assert check_instruction("abc", 2) == "instruction of 3 characters (limit 2)"


def test_onnx_shape_mismatches_are_named_with_dynamic_dims_as_B():
    spec = ModelSpec.load(default_model_dir())
    inputs = {name: list(shape) for name, shape in input_shapes(spec).items()}
    outputs = {"actions": [None, spec.chunk_size, spec.action_dim]}
    assert check_onnx_io(spec, inputs, outputs) == []
    outputs = {"actions": [None, spec.chunk_size + 1, spec.action_dim]}
    assert check_onnx_io(spec, inputs, outputs) == [
        f"output 'actions': expected shape [B, {spec.chunk_size}, {spec.action_dim}], "
        f"got [B, {spec.chunk_size + 1}, {spec.action_dim}]"]


def test_file_sha256_is_the_hash_of_the_whole_file_read_in_blocks(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # more than one 1 MiB block
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()


def test_wrench_samples_are_force_then_torque():
    msg = NS(wrench=NS(force=NS(x=1.0, y=2.0, z=3.0), torque=NS(x=4.0, y=5.0, z=6.0)))
    assert wrench_sample(msg) == (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)


def test_live_limits_reach_the_gates():
    core = make_core()
    core.on_instruction("go", now=T0)
    core.on_features(np.zeros((1, 64), np.float32), source_stamp=T0, now=T0)
    for i in range(100):
        core.on_sensor(T0 + i * DT, [0, 0, 0, 0, 0, 9.81], now=T0 + i * DT)
    now = T0 + 99 * DT
    assert core.tick(now).chunk is not None
    core.set_limits(max_feature_age=0.05, max_sensor_gap=0.05)
    assert core.tick(now).reason is StopReason.FEATURES_STALE
    core.set_limits(max_feature_age=2.0, max_sensor_gap=0.001)
    assert core.tick(now + 0.002).reason is StopReason.SENSOR_GAP
    core.set_limits(max_feature_age=2.0, max_sensor_gap=0.05)
    assert core.tick(now + 0.002).chunk is not None
    assert core.motion.horizon >= 2.0  # the motion history keeps at least max_feature_age


def test_rate_meter_default_window_boundaries_and_two_events():
    clock = FakeClock()
    meter = RateMeter(clock=clock)  # the default 5 s window
    meter.tick()
    clock.now += 1.0
    meter.tick()
    assert meter.rate() == pytest.approx(1.0)  # two events: one interval of 1 s
    clock.now += 4.0  # the first event exactly 5 s old: still in the window
    assert meter.rate() == pytest.approx(1.0)
    clock.now += 0.5  # 5.5 s old: out
    assert meter.rate() == 0.0


def test_latency_stats_keep_the_newest_thousand_by_default():
    stats = LatencyStats()
    for k in range(1001):
        stats.add(k * 1e-3)
    assert len(stats) == 1000 and stats.percentile_ms(0) == pytest.approx(1.0)


def test_clock_readings_just_above_zero_count_and_a_two_second_step_is_no_jump():
    from mobile_vla_ros.core.validation import ClockWatch, check_stamp

    watch = ClockWatch()
    assert watch.check(0.5) is None and watch.check(5.0) == "forward"  # a sim clock that starts at 0.5 s
    watch = ClockWatch()
    assert watch.check(10.0) is None and watch.check(12.0) is None  # exactly the forward threshold
    assert check_stamp(0.5, now=1.0) is None  # a stamp just after the epoch is a stamp
    assert check_stamp(1.5, now=1.0) is None and check_stamp(1.51, now=1.0) == "future_stamp"


def test_feature_cache_counts_every_update_and_every_rejection():
    from mobile_vla_ros.core.feature_cache import FeatureCache

    cache = FeatureCache()
    f = np.zeros((1, 4), np.float32)
    assert cache.update(f, 1.0) and cache.update(f, 2.0) and cache.updates == 2  # before any instruction too
    cache.set_instruction("go", now=10.0)
    assert not cache.update(f, 9.0) and not cache.update(f, 9.5)
    assert cache.rejected_old_instruction == 2 and cache.updates == 2


def test_parameter_validation_names_what_it_got():
    from mobile_vla_ros.core.params import (
        BOOL,
        DOUBLE,
        DOUBLE_ARRAY,
        INTEGER,
        STRING,
        STRING_ARRAY,
        ParamSpec,
        validate,
    )

    assert validate(ParamSpec("x", DOUBLE, 1.0, ""), "a") == "x: expected a number, got str"
    assert validate(ParamSpec("x", INTEGER, 1, ""), 1.5) == "x: expected an integer, got float"
    assert validate(ParamSpec("x", BOOL, True, ""), "yes") == "x: expected true/false, got 'yes'"
    assert validate(ParamSpec("x", STRING, "", ""), 3) == "x: expected a string, got int"
    assert validate(ParamSpec("x", STRING, "a", "", choices=("a", "b")), "c") == "x: 'c' is not one of a, b"
    names = ParamSpec("x", STRING_ARRAY, [], "", choices=("a", "b"))
    assert validate(names, "ab") == "x: expected a list of strings"  # a string is not a list of strings
    assert validate(names, ["a", "c"]) == "x: 'c' is not one of 'a', 'b'"
    assert validate(names, ["a", "b"]) is None
    numbers = ParamSpec("x", DOUBLE_ARRAY, [], "")
    assert validate(numbers, 5.0) == "x: expected a list of numbers"
    assert validate(numbers, [1.0, True]) == "x: expected a list of numbers"
    assert validate(numbers, [1.0, 2]) is None
    with pytest.raises(ValueError, match=r"^unknown parameter type 'complex'$"):
        validate(ParamSpec("x", "complex", 0, ""), 0)


def test_the_engine_sidecar_records_the_build(tmp_path):
    import json
    import re

    from mobile_vla_ros.core.engine_cache import EngineKey, write_sidecar

    key = EngineKey("ab" * 32, "Orin", "8.7", "10.3.0", "fp16")
    path = write_sidecar(key, tmp_path, 12.3456, {"max_batch": 8})
    text = path.read_text()
    record = json.loads(text)
    assert record["build_seconds"] == 12.35 and record["max_batch"] == 8 and record["precision"] == "fp16"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", record["built_at"])
    assert text.startswith('{\n  "onnx_sha256"')  # indented: a person reads it on the robot


def image(encoding: str, w: int, h: int, step: int, data: bytes):
    return NS(encoding=encoding, width=w, height=h, step=step, data=data)


def test_images_decode_per_encoding_with_row_padding():
    from mobile_vla_ros.core.images import decode_rgb

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    padded = np.concatenate([rgb.reshape(2, 9), np.full((2, 3), 255, np.uint8)], axis=1)  # step 12 > 9
    out = decode_rgb(image("rgb8", 3, 2, 12, padded.tobytes()))
    assert out.dtype == np.uint8 and np.array_equal(out, rgb) and out.flags.c_contiguous
    assert np.array_equal(decode_rgb(image("bgr8", 3, 2, 9, rgb[:, :, ::-1].tobytes())), rgb)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_rgb(image("rgba8", 3, 2, 12, rgba.tobytes())), rgb)
    bgra = np.concatenate([rgb[:, :, ::-1], np.full((2, 3, 1), 7, np.uint8)], axis=2)
    assert np.array_equal(decode_rgb(image("bgra8", 3, 2, 12, bgra.tobytes())), rgb)
    mono = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    assert np.array_equal(decode_rgb(image("mono8", 3, 2, 3, mono.tobytes())), np.repeat(mono[:, :, None], 3, axis=2))


def test_bad_images_are_rejected_with_the_reason():
    from mobile_vla_ros.core.images import MAX_IMAGE_PIXELS, ConversionError, check_image

    cases = [(image("yuv422", 2, 2, 4, bytes(8)), "unsupported encoding 'yuv422' (supported: rgb8, bgr8, rgba8, "
                                                   "bgra8, mono8)"),
             (image("rgb8", 0, 2, 0, b""), "image size 0x2 outside 1..16777216 pixels"),
             (image("rgb8", 2, 0, 6, b""), "image size 2x0 outside 1..16777216 pixels"),
             (image("rgb8", 4097, 4096, 4097 * 3, b""), f"image size 4097x4096 outside 1..{MAX_IMAGE_PIXELS} pixels"),
             (image("rgb8", 2, 2, 5, bytes(10)), "step 5 < width 2 x 3 bytes"),
             (image("rgb8", 2, 2, 6, bytes(11)), "data has 11 bytes, expected step 6 x height 2 = 12")]
    for msg, reason in cases:
        with pytest.raises(ConversionError) as err:
            check_image(msg)
        assert str(err.value) == reason
    assert check_image(image("rgb8", 4096, 4096, 4096 * 3, bytes(4096 * 4096 * 3))) == 3  # the largest allowed
    assert check_image(image("mono8", 1, 1, 1, bytes(1))) == 1


def test_a_recording_extends_the_history_with_the_gyro_or_the_held_command():
    from mobile_vla_ros.core.motion import MotionHistory, extend_from_streams

    times = np.arange(0, 651) / 650
    samples = np.zeros((651, 6))
    samples[:, 2] = 0.2  # gyro z
    commands = np.array([[1.0, 0.9], [0.5, 0.9]])  # forward, yaw rate: 1 m/s, then 0.5 m/s from 0.5 s
    imu = extend_from_streams(MotionHistory(10.0, 650.0), "imu", times, samples, np.array([0.0, 0.5]), commands)
    wrench = extend_from_streams(MotionHistory(10.0, 650.0), "wrench", times, samples, np.array([0.0, 0.5]), commands)
    _, dx_imu, _, yaw_imu = imu.motion_since(0.0, 1.0)
    _, _, _, yaw_wrench = wrench.motion_since(0.0, 1.0)
    assert yaw_imu == pytest.approx(0.2, abs=1e-3) and yaw_wrench == pytest.approx(0.9, abs=1e-3)
    assert dx_imu == pytest.approx(0.75, abs=0.02)  # 0.5 s at 1 m/s + 0.5 s at 0.5 m/s (on a gentle arc)
