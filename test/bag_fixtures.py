"""Small rosbag2 bags written with rosbags (the same library the tools read them with)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_imu_bag(bag: Path, storage: str, samples: int, feature_value: float) -> Path:
    """/sensor: `samples` IMU messages at 650 Hz (gyro z = 0.1 * index, acc z = 9.81);
    /vl_features: one 1x64 32FC1 feature image of `feature_value` before them."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Imu, Image = store.types["sensor_msgs/msg/Imu"], store.types["sensor_msgs/msg/Image"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    Vector3, Quaternion = store.types["geometry_msgs/msg/Vector3"], store.types["geometry_msgs/msg/Quaternion"]
    cov = np.zeros(9)
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    with Writer(bag, version=8, storage_plugin=plugin) as writer:
        imu_conn = writer.add_connection("/sensor", Imu.__msgtype__, typestore=store)
        feat_conn = writer.add_connection("/vl_features", Image.__msgtype__, typestore=store)
        feats = np.full((1, 64), feature_value, dtype="<f4")
        image = Image(Header(Time(0, 0), "cam"), 1, 64, "32FC1", 0, 256, np.frombuffer(feats.tobytes(), np.uint8))
        writer.write(feat_conn, 1, store.serialize_cdr(image, Image.__msgtype__))
        for i in range(samples):
            t = 1_000_000 + i * 1_538_461
            msg = Imu(Header(Time(t // 1_000_000_000, t % 1_000_000_000), "imu"), Quaternion(0, 0, 0, 1), cov,
                      Vector3(0, 0, 0.1 * i), cov, Vector3(0, 0, 9.81), cov)
            writer.write(imu_conn, t, store.serialize_cdr(msg, Imu.__msgtype__))
    return bag
