"""Action-expert inputs read from a recorded bag (rosbags; no ROS install needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.model_spec import INPUT_FEATURES, INPUT_SENSOR, ModelSpec, ModelSpecError
from ..core.sensor_window import SAMPLE_FROM_MESSAGE, PushResult, SensorWindow


def recorded_inputs(bag: Path, spec: ModelSpec, sensor_topic: str, features_topic: str,
                         limit: int = 500) -> dict[str, np.ndarray]:
    """Model inputs recorded in a rosbag2 bag (sqlite3 or mcap): non-overlapping sensor windows and the
    latest recorded VL features at the end of each (zeros before the first). Used for INT8 calibration
    and to verify an export on real data."""
    from rosbags.highlevel import AnyReader

    window = SensorWindow(spec.sensor_channels, spec.sensor_window)
    features = None
    sensors, feats = [], []
    accepted = 0
    with AnyReader([Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic in (sensor_topic, features_topic)]
        if not any(c.topic == sensor_topic for c in connections):
            topics = sorted(c.topic for c in reader.connections)
            raise ModelSpecError(f"{bag}: no topic {sensor_topic} (topics: {topics})")
        for connection, stamp, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            if connection.topic == features_topic:
                features = np.frombuffer(bytes(msg.data), dtype="<f4").reshape(msg.height, msg.width)[-1]
                continue
            if window.push(stamp * 1e-9, SAMPLE_FROM_MESSAGE[spec.sensor_type](msg)) is not PushResult.ACCEPTED:
                continue
            accepted += 1
            if accepted % spec.sensor_window:
                continue  # one calibration sample per full, non-overlapping window
            sensors.append(window.window(spec.sensor_window, stamp * 1e-9, float("inf")).values.copy())
            feats.append(features if features is not None else np.zeros(spec.feature_dim, np.float32))
            if len(sensors) >= limit:
                break
    if not sensors:
        raise ModelSpecError(f"{bag}: fewer than {spec.sensor_window} samples on {sensor_topic}")
    return {INPUT_SENSOR: np.stack(sensors).astype(np.float32), INPUT_FEATURES: np.stack(feats).astype(np.float32)}
