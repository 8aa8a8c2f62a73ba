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


def write_episode_bag(bag: Path, storage: str = "sqlite3", seconds: float = 4.0, seed: int = 0,
                      instruction: str | None = "go to the red cylinder", sensor_hz: float = 650.0,
                      action: str = "twist", later_instruction: tuple[float, str] | None = None,
                      sensor: str = "imu") -> Path:
    """A robot-like recording: /camera/image_raw (rgb8 64x64 at 15 Hz, a colour that drifts),
    /instruction (once), /sensor (IMU at `sensor_hz`, gyro z follows the command) and the commands
    at 50 Hz (a smooth forward speed and turn rate) as /cmd_vel Twist (`action` twist), /action_chunk
    JointTrajectory (joint_trajectory) or /joint_commands JointState (joint_state).
    `storage`: sqlite3 | mcap (rosbag2) | ros1 (a ROS 1 .bag file at `bag`.bag). `later_instruction`
    (seconds after the start, text): a second instruction mid-bag. `sensor` imu | wrench (WrenchStamped
    on /sensor: weight on force z, the turn rate on torque z)."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC if storage == "ros1" else Stores.ROS2_HUMBLE)
    T = store.types
    Imu, Image, String = T["sensor_msgs/msg/Imu"], T["sensor_msgs/msg/Image"], T["std_msgs/msg/String"]
    Twist, Time = T["geometry_msgs/msg/Twist"], T["builtin_interfaces/msg/Time"]
    Vector3, Quaternion = T["geometry_msgs/msg/Vector3"], T["geometry_msgs/msg/Quaternion"]

    def Header(stamp, frame):  # ROS 1 headers also carry a sequence number
        cls = T["std_msgs/msg/Header"]
        return cls(0, stamp, frame) if storage == "ros1" else cls(stamp, frame)
    rng = np.random.default_rng(seed)
    cov = np.zeros(9)
    t0 = 100_000_000_000  # 100 s: stamps are far from zero

    def command(t: float) -> tuple[float, float]:
        return 0.3 + 0.1 * np.sin(0.7 * t + seed), 0.5 * np.sin(1.3 * t + 2 * seed)

    def stamp(ns: int):
        return Time(ns // 1_000_000_000, ns % 1_000_000_000)

    events = []
    for k in range(int(seconds * 15)):
        ns = t0 + int(k / 15 * 1e9)
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[..., 0] = 120 + 100 * np.sin(k / 10 + seed)
        rgb[..., 1] = rng.integers(0, 255)
        rgb[32:, :, 2] = 200
        events.append(("/camera/image_raw", ns, Image(Header(stamp(ns), "camera"), 64, 64, "rgb8", 0, 192,
                                                      rgb.reshape(-1))))
    for k in range(int(seconds * sensor_hz)):
        ns = t0 + int(k / sensor_hz * 1e9)
        _, wz = command((ns - t0) * 1e-9)
        if sensor == "wrench":
            events.append(("/sensor", ns, T["geometry_msgs/msg/WrenchStamped"](Header(stamp(ns), "ft"), T[
                "geometry_msgs/msg/Wrench"](Vector3(0, 0, -20.0 + rng.standard_normal()), Vector3(0, 0, wz)))))
            continue
        events.append(("/sensor", ns, Imu(Header(stamp(ns), "imu"), Quaternion(0, 0, 0, 1), cov,
                                          Vector3(0, 0, wz + 0.01 * rng.standard_normal()), cov,
                                          Vector3(0.05 * rng.standard_normal(), 0, 9.81), cov)))
    action_topic, action_cls = {"twist": ("/cmd_vel", Twist),
                                "joint_trajectory": ("/action_chunk", T["trajectory_msgs/msg/JointTrajectory"]),
                                "joint_state": ("/joint_commands", T["sensor_msgs/msg/JointState"])}[action]
    for k in range(int(seconds * 50)):
        ns = t0 + int(k / 50 * 1e9)
        vx, wz = command((ns - t0) * 1e-9)
        if action == "twist":
            msg = Twist(Vector3(vx, 0, 0), Vector3(0, 0, wz))
        elif action == "joint_trajectory":  # joints in another order than the model's action_names
            point = T["trajectory_msgs/msg/JointTrajectoryPoint"](
                np.array([wz, vx]), np.zeros(0), np.zeros(0), np.zeros(0), T["builtin_interfaces/msg/Duration"](0, 0))
            msg = action_cls(Header(stamp(ns), ""), ["angular_z", "linear_x"], [point])
        else:
            msg = action_cls(Header(stamp(ns), ""), ["linear_x", "angular_z"], np.zeros(2), np.array([vx, wz]),
                             np.zeros(0))
        events.append((action_topic, ns, msg))
    if instruction is not None:
        events.append(("/instruction", t0 - 1_000_000, String(instruction)))
        if later_instruction is not None:
            events.append(("/instruction", t0 + int(later_instruction[0] * 1e9), String(later_instruction[1])))
    events.sort(key=lambda e: e[1])
    types = {"/camera/image_raw": Image, "/sensor": T["geometry_msgs/msg/WrenchStamped"] if sensor == "wrench" else Imu,
             action_topic: action_cls, "/instruction": String}
    if storage == "ros1":
        from rosbags.rosbag1 import Writer as Ros1Writer

        bag = bag.with_suffix(".bag")
        writer, serialize = Ros1Writer(bag), store.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        writer, serialize = Writer(bag, version=8, storage_plugin=plugin), store.serialize_cdr
    with writer:
        conns = {topic: writer.add_connection(topic, cls.__msgtype__, typestore=store)
                 for topic, cls in types.items() if instruction is not None or topic != "/instruction"}
        for topic, ns, msg in events:
            writer.write(conns[topic], ns, serialize(msg, types[topic].__msgtype__))
    return bag
