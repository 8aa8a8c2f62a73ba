"""The motion since the features' image: exact integration, streaming = batch, the body frame of the
image, and one recorded stream giving the same motion in the node's core, offline replay and training."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mobile_vla_ros.core.action_pipeline import ActionExpertCore
from mobile_vla_ros.core.model_spec import ModelSpec, ModelSpecError, check_onnx_io
from mobile_vla_ros.core.motion import MOTION_INPUT, MotionHistory, command_at, extend_from_streams
from mobile_vla_ros.paths import default_model_dir

HZ = 650.0


def stream(history: MotionHistory, seconds: float, rate: float, speed: float, t0: float = 0.0) -> None:
    for t in t0 + np.arange(0, seconds + 1e-9, 1 / HZ):
        history.extend([t], [rate], [speed])


def test_an_arc_is_integrated_exactly_and_reported_in_the_images_body_frame():
    history = MotionHistory(horizon=5.0, sample_hz=HZ)
    stream(history, 2.0, rate=0.5, speed=0.4)
    radius = 0.4 / 0.5
    age, dx, dy, dyaw = history.motion_since(0.0, 2.0)
    assert age == pytest.approx(2.0)
    assert dx == pytest.approx(radius * math.sin(1.0), abs=1e-5)
    assert dy == pytest.approx(radius * (1 - math.cos(1.0)), abs=1e-5)
    assert dyaw == pytest.approx(1.0, abs=1e-5)
    # From t = 1 s the robot faces 0.5 rad further left: the same arc segment looks the same in its frame.
    later = history.motion_since(1.0, 2.0)
    first = history.motion_since(0.0, 1.0)
    np.testing.assert_allclose(later, first, atol=1e-5)


def test_driving_straight_after_a_turn_shows_sideways_in_the_images_frame():
    history = MotionHistory(horizon=10.0, sample_hz=HZ)
    stream(history, 1.0, rate=math.pi / 2, speed=0.0)          # turn left 90 degrees in place
    stream(history, 1.0, rate=0.0, speed=0.5, t0=1.0 + 1 / HZ)  # then drive 0.5 m forward
    _, dx, dy, dyaw = history.motion_since(0.0, 2.0)
    # The turn rate is held until the next sample: one more interval of it before driving straight.
    assert dyaw == pytest.approx(math.pi / 2 * (1 + 1 / HZ), abs=1e-5)
    assert dx == pytest.approx(0.0, abs=5e-3) and dy == pytest.approx(0.5, abs=5e-3)  # to the image's left


def test_streaming_with_compaction_equals_one_batch():
    rng = np.random.default_rng(0)
    times = np.arange(0, 12.0, 1 / HZ)
    rates, speeds = rng.uniform(-1, 1, len(times)), rng.uniform(0, 0.5, len(times))
    streamed = MotionHistory(horizon=3.0, sample_hz=HZ)
    for t, r, v in zip(times, rates, speeds):
        streamed.add(t, r, v)  # the node's scalar path
    batch = MotionHistory(horizon=100.0, sample_hz=HZ)
    batch.extend(times, rates, speeds)
    assert streamed.oldest_time() > 5.0  # old samples were dropped: memory stays bounded
    t_image = np.array([9.0, 10.5, 11.2])
    np.testing.assert_allclose(streamed.motion_since(t_image, 11.9), batch.motion_since(t_image, 11.9), atol=1e-6)


def test_older_samples_are_ignored_and_clear_forgets():
    history = MotionHistory(horizon=5.0, sample_hz=HZ)
    stream(history, 1.0, rate=0.3, speed=0.2)
    before = history.motion_since(0.0, 1.0)
    history.extend([0.5], [10.0], [10.0])  # out of order: not integrated
    np.testing.assert_array_equal(history.motion_since(0.0, 1.0), before)
    history.clear()
    assert len(history) == 0
    np.testing.assert_allclose(history.motion_since(0.2, 1.0), [0.8, 0.0, 0.0, 0.0], atol=1e-6)


def test_command_hold_is_zero_before_the_first_command():
    held = command_at(np.array([0.0, 1.0, 1.5, 3.0]), np.array([1.0, 2.0]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(held, [[0, 0], [1, 2], [1, 2], [3, 4]])


def test_model_yaml_records_the_motion_input_and_the_graph_is_checked_against_it():
    spec = ModelSpec.load(default_model_dir())
    assert spec.motion_input == MOTION_INPUT
    raw = spec.to_yaml_dict()
    assert raw["motion_input"]["layout"] == ["feature_age_s", "dx_m", "dy_m", "dyaw_rad"]
    assert len(raw["normalization"]["motion_mean"]) == 4
    two_inputs = {"vl_features": [None, spec.feature_dim], "sensor_window": [None, 65, 6]}
    problems = check_onnx_io(spec, two_inputs, {"actions": [None, 8, 2]})
    assert problems and "motion_since_image" in problems[0] and "expected" in problems[0]
    raw["motion_input"]["layout"] = ["dx_m", "dy_m"]
    with pytest.raises(ModelSpecError, match=r"motion_input\.layout expected"):
        ModelSpec.from_dict(raw)


class _Recording:
    """A backend that returns zeros and keeps what it was given."""

    name = "recording"

    def __init__(self, spec):
        self.spec, self.calls = spec, []

    def run(self, features, window, motion=None):
        self.calls.append(motion)
        return np.zeros((1, self.spec.chunk_size, self.spec.action_dim), np.float32)


def test_one_recorded_stream_gives_the_same_motion_in_core_replay_and_training(tmp_path, tiny_vlm_dir):
    """The node's core (streamed sample by sample, as the node and offline replay feed it) and
    training (one batch per bag) compute the motion with the same function and agree."""
    from mobile_vla_ros.tools.evaluation.evaluate import ReplayConfig, replay
    from mobile_vla_ros.tools.recordings import EXECUTED_TOPIC, read_recording
    from mobile_vla_ros.tools.simulation import record_sim
    from mobile_vla_ros.tools.training import train
    from mobile_vla_ros.vlm.base import ExtractorConfig
    from mobile_vla_ros.vlm.factory import create_extractor

    assert record_sim.main(["--episodes", "1", "--seed", "31", "--out", str(tmp_path), "--expert-delay-max",
                            "1.0"]) == 0
    bag = next(tmp_path.glob("episode_*"))
    spec = ModelSpec.load(default_model_dir())
    topics = {"image": "/camera/image_raw", "sensor": "/sensor", "instruction": "/instruction",
              "action": "/cmd_vel", "executed": EXECUTED_TOPIC}
    rec = read_recording(bag, spec, topics, ["linear.x", "angular.z"])
    labels = np.stack([v for _, v in rec.commands])
    executed = np.stack([v for _, v in rec.executed])
    assert len(rec.executed) == len(rec.commands) and not np.allclose(labels, executed)  # noise + delay

    extractor = create_extractor(ExtractorConfig(model_path=str(tiny_vlm_dir)))
    backend = _Recording(spec)
    out = replay(rec, spec, backend, extractor, ReplayConfig(0.59, 10.0, 1.0, 5.0, 0.05), None)
    ticks = out["ticks"]
    assert len(ticks) > 20 and max(t["motion"][0] for t in ticks) > 1.5  # features reused for over 1.5 s

    data = train.build_dataset([rec], [np.zeros((len(rec.images), spec.feature_dim), np.float32)], spec,
                               sample_dt=0.05, twist_mapping=["linear.x", "angular.z"])
    stamps = np.array([t["stamp"] for t in ticks])
    motions = np.stack([t["motion"] for t in ticks])
    image_stamps = stamps - motions[:, 0].astype(np.float64)
    batch = data.motion_history.motion_since(image_stamps, stamps)
    np.testing.assert_allclose(motions, batch, atol=2e-4)
    assert np.abs(motions[:, 3]).max() > 0.2  # the robot turned: a comparison of zeros would prove nothing

    core = ActionExpertCore(spec, _Recording(spec), 5.0, 0.05)  # streamed, sample by sample, as the node does
    replayed = MotionHistory(10.0, HZ)
    extend_from_streams(replayed, "imu", np.array([t for t, _ in rec.sensor]), np.stack([v for _, v in rec.sensor]),
                        np.array([t for t, _ in rec.executed]), executed)
    events = sorted([(t, 0, v) for t, v in rec.executed] + [(t, 1, v) for t, v in rec.sensor], key=lambda e: e[:2])
    for t, kind, value in events:
        if kind == 0:
            core.on_executed(value)
        else:
            core.on_sensor(t, value, t)
    end = rec.sensor[-1][0]
    np.testing.assert_allclose(core.motion.motion_since(end - 2.0, end), replayed.motion_since(end - 2.0, end),
                               atol=2e-4)
