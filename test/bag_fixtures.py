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
    msgs = _Messages(store.types, storage == "ros1")
    rng = np.random.default_rng(seed)

    def command(t: float) -> tuple[float, float]:
        return 0.3 + 0.1 * np.sin(0.7 * t + seed), 0.5 * np.sin(1.3 * t + 2 * seed)

    action_topic, action_cls = msgs.action_topic(action)
    events = _image_events(msgs, seconds, seed, rng) + _sensor_events(msgs, seconds, sensor_hz, sensor, command, rng)
    events += [(action_topic, ns, msgs.action(action, ns, *command((ns - T0_NS) * 1e-9)))
               for ns in (T0_NS + int(k / 50 * 1e9) for k in range(int(seconds * 50)))]
    if instruction is not None:
        events.append(("/instruction", T0_NS - 1_000_000, msgs.String(instruction)))
        if later_instruction is not None:
            events.append(("/instruction", T0_NS + int(later_instruction[0] * 1e9), msgs.String(later_instruction[1])))
    events.sort(key=lambda e: e[1])
    types = {"/camera/image_raw": msgs.Image, "/sensor": msgs.sensor_class(sensor), action_topic: action_cls}
    if instruction is not None:
        types["/instruction"] = msgs.String
    return _write(bag, storage, store, types, events)


T0_NS = 100_000_000_000  # 100 s: stamps are far from zero


class _Messages:
    """The rosbags message classes of one type store, and the fixture's messages built from them."""

    def __init__(self, types, ros1: bool) -> None:
        self.T, self.ros1 = types, ros1
        self.Imu, self.Image, self.String = types["sensor_msgs/msg/Imu"], types["sensor_msgs/msg/Image"], \
            types["std_msgs/msg/String"]
        self.Twist, self.Time = types["geometry_msgs/msg/Twist"], types["builtin_interfaces/msg/Time"]
        self.Vector3, self.Quaternion = types["geometry_msgs/msg/Vector3"], types["geometry_msgs/msg/Quaternion"]

    def header(self, ns: int, frame: str):
        stamp = self.Time(ns // 1_000_000_000, ns % 1_000_000_000)
        cls = self.T["std_msgs/msg/Header"]
        return cls(0, stamp, frame) if self.ros1 else cls(stamp, frame)  # ROS 1 headers carry a sequence number

    def sensor_class(self, sensor: str):
        return self.T["geometry_msgs/msg/WrenchStamped"] if sensor == "wrench" else self.Imu

    def action_topic(self, action: str):
        return {"twist": ("/cmd_vel", self.Twist),
                "joint_trajectory": ("/action_chunk", self.T["trajectory_msgs/msg/JointTrajectory"]),
                "joint_state": ("/joint_commands", self.T["sensor_msgs/msg/JointState"])}[action]

    def action(self, action: str, ns: int, vx: float, wz: float):
        if action == "twist":
            return self.Twist(self.Vector3(vx, 0, 0), self.Vector3(0, 0, wz))
        _, cls = self.action_topic(action)
        if action == "joint_trajectory":  # joints in another order than the model's action_names
            point = self.T["trajectory_msgs/msg/JointTrajectoryPoint"](
                np.array([wz, vx]), np.zeros(0), np.zeros(0), np.zeros(0),
                self.T["builtin_interfaces/msg/Duration"](0, 0))
            return cls(self.header(ns, ""), ["angular_z", "linear_x"], [point])
        return cls(self.header(ns, ""), ["linear_x", "angular_z"], np.zeros(2), np.array([vx, wz]), np.zeros(0))


def _image_events(msgs: _Messages, seconds: float, seed: int, rng) -> list:
    events = []
    for k in range(int(seconds * 15)):
        ns = T0_NS + int(k / 15 * 1e9)
        rgb = np.zeros((64, 64, 3), np.uint8)
        rgb[..., 0] = 120 + 100 * np.sin(k / 10 + seed)
        rgb[..., 1] = rng.integers(0, 255)
        rgb[32:, :, 2] = 200
        events.append(("/camera/image_raw", ns, msgs.Image(msgs.header(ns, "camera"), 64, 64, "rgb8", 0, 192,
                                                           rgb.reshape(-1))))
    return events


def _sensor_events(msgs: _Messages, seconds: float, sensor_hz: float, sensor: str, command, rng) -> list:
    events, cov, V = [], np.zeros(9), msgs.Vector3
    for k in range(int(seconds * sensor_hz)):
        ns = T0_NS + int(k / sensor_hz * 1e9)
        _, wz = command((ns - T0_NS) * 1e-9)
        if sensor == "wrench":
            events.append(("/sensor", ns, msgs.T["geometry_msgs/msg/WrenchStamped"](msgs.header(ns, "ft"), msgs.T[
                "geometry_msgs/msg/Wrench"](V(0, 0, -20.0 + rng.standard_normal()), V(0, 0, wz)))))
            continue
        events.append(("/sensor", ns, msgs.Imu(msgs.header(ns, "imu"), msgs.Quaternion(0, 0, 0, 1), cov,
                                               V(0, 0, wz + 0.01 * rng.standard_normal()), cov,
                                               V(0.05 * rng.standard_normal(), 0, 9.81), cov)))
    return events


def _write(bag: Path, storage: str, store, types: dict, events: list) -> Path:
    if storage == "ros1":
        from rosbags.rosbag1 import Writer as Ros1Writer

        bag = bag.with_suffix(".bag")
        writer, serialize = Ros1Writer(bag), store.serialize_ros1
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        writer, serialize = Writer(bag, version=8, storage_plugin=plugin), store.serialize_cdr
    with writer:
        conns = {topic: writer.add_connection(topic, cls.__msgtype__, typestore=store) for topic, cls in types.items()}
        for topic, ns, msg in events:
            writer.write(conns[topic], ns, serialize(msg, types[topic].__msgtype__))
    return bag
