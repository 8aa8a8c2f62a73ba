"""Action-expert inputs read from a recorded bag (rosbags; no ROS install needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.model_spec import INPUT_FEATURES, INPUT_SENSOR, ModelSpec, ModelSpecError
from ...core.motion import MotionHistory, sample_yaw_rate
from ...core.names import CMD_VEL_TOPIC, bag_topic
from ...core.sensor_window import SAMPLE_FROM_MESSAGE, PushResult, SensorWindow


def recorded_inputs(bag: Path, spec: ModelSpec, sensor_topic: str, features_topic: str,
                    command_topic: str = bag_topic(CMD_VEL_TOPIC), limit: int = 500) -> dict[str, np.ndarray]:
    """Model inputs recorded in a rosbag2 bag (sqlite3 or mcap): non-overlapping sensor windows, the
    latest recorded VL features at the end of each (zeros before the first) and, for models with the
    motion input, the motion since those features' image (gyro and the Twist commands on
    `command_topic`, as the node integrates them). Used for INT8 calibration and to verify an export
    on real data."""
    from rosbags.highlevel import AnyReader

    window = SensorWindow(spec.sensor_channels, spec.sensor_window)
    history = MotionHistory(horizon=30.0, sample_hz=spec.sensor_hz)
    features, feature_stamp, command = None, 0.0, (0.0, 0.0)
    sensors, feats, motions = [], [], []
    accepted = 0
    with AnyReader([Path(bag)]) as reader:
        topics = (sensor_topic, features_topic, command_topic)
        connections = [c for c in reader.connections if c.topic in topics]
        if not any(c.topic == sensor_topic for c in connections):
            topics = sorted(c.topic for c in reader.connections)
            raise ModelSpecError(f"{bag}: no topic {sensor_topic} (topics: {topics})")
        for connection, stamp, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == features_topic:
                features = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)[-1]
                feature_stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
                continue
            if connection.topic == command_topic:
                twist = msg.twist if hasattr(msg, "twist") else msg
                command = (twist.linear.x, twist.angular.z)
                continue
            sample = SAMPLE_FROM_MESSAGE[spec.sensor_type](msg)
            if window.push(stamp * 1e-9, sample) is not PushResult.ACCEPTED:
                continue
            history.add(stamp * 1e-9, sample_yaw_rate(spec.sensor_type, sample, command[1]), command[0])
            accepted += 1
            if accepted % spec.sensor_window:
                continue  # one calibration sample per full, non-overlapping window
            sensors.append(window.window(spec.sensor_window, stamp * 1e-9, float("inf")).values.copy())
            feats.append(features if features is not None else np.zeros(spec.feature_dim, np.float32))
            motions.append(history.motion_since(feature_stamp if features is not None else stamp * 1e-9,
                                                stamp * 1e-9))
            if len(sensors) >= limit:
                break
    if not sensors:
        raise ModelSpecError(f"{bag}: fewer than {spec.sensor_window} samples on {sensor_topic}")
    out = {INPUT_SENSOR: np.stack(sensors).astype(np.float32), INPUT_FEATURES: np.stack(feats).astype(np.float32)}
    if spec.motion_input:
        out[spec.motion_input] = np.stack(motions).astype(np.float32)
    return out
