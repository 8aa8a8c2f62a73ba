"""Recorded robot data in rosbag2 bags (sqlite3 or mcap, read with rosbags), the one place that reads
them for offline evaluation, live replay and training: `read_recording` gives a `Recording` (images,
sensor samples, instructions and commands with their stamps; sensor type and command type followed
from the bag), and `commands_over` aligns the recorded commands with a chunk's span."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.model_spec import ModelSpec
from ..core.names import SIM_EXECUTED_CMD_VEL_TOPIC, SIM_POSE_TOPIC, SIM_TASK_TOPIC, bag_topic


class BagError(RuntimeError):
    """The bag cannot be evaluated (unreadable, missing topic, wrong type); one line for the user."""


@dataclass
class Recording:
    """A bag's inputs and recorded commands, time-sorted, times in seconds (header stamps)."""

    images: list[tuple[float, np.ndarray]] = field(default_factory=list)
    sensor: list[tuple[float, np.ndarray]] = field(default_factory=list)
    instructions: list[tuple[float, str]] = field(default_factory=list)
    commands: list[tuple[float, np.ndarray]] = field(default_factory=list)
    # What the robot executed (action vectors): the bag's executed-command topic when it has one
    # (record-sim writes the noisy executed command there), else the recorded commands themselves.
    executed: list[tuple[float, np.ndarray]] = field(default_factory=list)
    # Simulator ground truth, when asked for and present (record-sim bags): base (x, y, yaw) and the task.
    poses: list[tuple[float, tuple[float, float, float]]] = field(default_factory=list)
    task: dict | None = None

    def command_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The recorded commands as ([N] times, [N, D] values)."""
        return np.array([t for t, _ in self.commands]), np.stack([v for _, v in self.commands])


TWIST_TYPES = ("geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped")
EXECUTED_TOPIC = bag_topic(SIM_EXECUTED_CMD_VEL_TOPIC)
# Roles a bag may lack: the executed commands (the action topic stands in) and the sim's ground truth.
SIM_TRUTH_TOPICS = {"pose": bag_topic(SIM_POSE_TOPIC), "task": bag_topic(SIM_TASK_TOPIC)}
OPTIONAL_ROLES = ("executed", *SIM_TRUTH_TOPICS)
ACTION_TYPES = (*TWIST_TYPES, "trajectory_msgs/msg/JointTrajectory", "sensor_msgs/msg/JointState")


def find_bags(paths: list[Path]) -> list[Path]:
    """Bag directories among `paths` (a bag, or a directory of bags), sorted within each path."""
    bags = []
    for path in paths:
        if (path / "metadata.yaml").is_file() or path.is_file():  # a rosbag2 directory or a ROS 1 .bag file
            bags.append(path)
        elif path.is_dir():
            found = sorted([p.parent for p in path.glob("*/metadata.yaml")] + list(path.glob("*.bag")))
            if not found:
                raise BagError(f"{path}: no rosbag2 bags (directories with metadata.yaml) inside")
            bags += found
        else:
            raise BagError(f"{path}: no such bag or directory")
    return bags


SENSOR_MSGTYPES = {"imu": "sensor_msgs/msg/Imu", "wrench": "geometry_msgs/msg/WrenchStamped"}


def sensor_type_of(bag: Path, topic: str) -> str:
    """The model sensor_type ('imu' / 'wrench') of `topic` in `bag`."""
    from rosbags.highlevel import AnyReader

    try:
        with AnyReader([Path(bag)]) as reader:
            msgtypes = {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:
        raise BagError(f"{bag}: cannot be read as a rosbag2 or ROS 1 bag ({type(exc).__name__}: {exc})") from exc
    if topic not in msgtypes:
        raise BagError(f"{bag}: no topic {topic} for sensor (topics: {sorted(msgtypes)})")
    found = [k for k, v in SENSOR_MSGTYPES.items() if v == msgtypes[topic]]
    if not found:
        raise BagError(f"{bag}: {topic} is {msgtypes[topic]}, expected one of {sorted(SENSOR_MSGTYPES.values())}")
    return found[0]


def read_recording(bag: Path, spec: ModelSpec, topics: dict[str, str], twist_mapping: list[str]) -> Recording:
    """The bag's messages on `topics` (roles image, sensor, instruction, action, executed; pose and
    task for the simulator's ground truth), checked
    against the model; stamps from headers (else the bag's receive time). Any bag problem: BagError."""
    from rosbags.highlevel import AnyReader

    rec = Recording()
    try:
        reader = AnyReader([Path(bag)])
        reader.open()
    except Exception as exc:  # rosbags raises several types for missing/truncated/corrupt bags
        raise BagError(f"{bag}: cannot be read as a rosbag2 or ROS 1 bag ({type(exc).__name__}: {exc})") from exc
    try:
        topics = _checked_topics(bag, {c.topic: c.msgtype for c in reader.connections}, topics, spec)
        role_of = {topic: role for role, topic in topics.items()}
        connections = [c for c in reader.connections if c.topic in role_of]
        for connection, bag_ns, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            _add(rec, role_of[connection.topic], msg, connection.msgtype, _stamp(msg, bag_ns), spec, twist_mapping)
    except BagError:
        raise
    except Exception as exc:
        raise BagError(f"{bag}: read failed ({type(exc).__name__}: {exc}); truncated or corrupt?") from exc
    finally:
        reader.close()
    for series in (rec.images, rec.sensor, rec.instructions, rec.poses):
        series.sort(key=lambda item: item[0])
    # Stable: of two commands for the same time, the later-recorded one wins.
    rec.commands.sort(key=lambda item: item[0])
    rec.executed.sort(key=lambda item: item[0])
    if not rec.executed:
        rec.executed = list(rec.commands)
    if not rec.sensor or not rec.commands:
        raise BagError(f"{bag}: needs messages on {topics['sensor']} and {topics['action']}")
    return rec


def _checked_topics(bag: Path, msgtypes: dict[str, str], topics: dict[str, str], spec: ModelSpec) -> dict[str, str]:
    """The roles the bag has, each topic of an accepted type; the OPTIONAL_ROLES and the instruction
    may be missing (the action topic and --instruction stand in for them; the caller checks the truth)."""
    expected = {"image": ("sensor_msgs/msg/Image",), "instruction": ("std_msgs/msg/String",),
                "action": ACTION_TYPES, "sensor": (SENSOR_MSGTYPES[spec.sensor_type],), "executed": ACTION_TYPES,
                "pose": ("geometry_msgs/msg/PoseStamped",), "task": ("std_msgs/msg/String",)}
    topics = {k: v for k, v in topics.items() if k not in OPTIONAL_ROLES or v in msgtypes}
    for role, topic in topics.items():
        if role == "instruction" and topic not in msgtypes:
            continue
        if topic not in msgtypes:
            raise BagError(f"{bag}: no topic {topic} for {role} (topics: {', '.join(sorted(msgtypes))})")
        if msgtypes[topic] not in expected[role]:
            raise BagError(f"{bag}: {topic} is {msgtypes[topic]}, expected {' or '.join(expected[role])}")
    return {role: topic for role, topic in topics.items() if topic in msgtypes}


def _stamp(msg, bag_ns: int) -> float:
    """The header stamp, else the bag's receive time; one formula, so one instant gives one float."""
    sec, nanosec = divmod(bag_ns, 1_000_000_000)
    header = getattr(msg, "header", None)
    if header is not None and (header.stamp.sec or header.stamp.nanosec):
        sec, nanosec = header.stamp.sec, header.stamp.nanosec
    return sec + nanosec * 1e-9


def _add(rec: Recording, role: str, msg, msgtype: str, stamp: float, spec: ModelSpec, twist_mapping: list[str]) -> None:
    from ..core.images import ConversionError, decode_rgb
    from ..core.sensor_window import SAMPLE_FROM_MESSAGE

    if role == "image":
        try:
            rec.images.append((stamp, decode_rgb(msg)))
        except ConversionError:
            pass  # as in vlm_node: a bad image is dropped
    elif role == "sensor":
        rec.sensor.append((stamp, np.asarray(SAMPLE_FROM_MESSAGE[spec.sensor_type](msg), dtype=np.float32)))
    elif role == "instruction":
        rec.instructions.append((stamp, msg.data.strip()))
    elif role == "executed":
        rec.executed += _commands(msg, msgtype, stamp, spec.action_names, twist_mapping)
    elif role == "pose":
        q = msg.pose.orientation
        yaw = math.atan2(2 * (q.w * q.z + q.x * q.y), 1 - 2 * (q.y * q.y + q.z * q.z))
        rec.poses.append((stamp, (msg.pose.position.x, msg.pose.position.y, yaw)))
    elif role == "task":
        rec.task = json.loads(msg.data)
    else:
        add_commands(rec.commands, stamp, _commands(msg, msgtype, stamp, spec.action_names, twist_mapping),
                     plan=msgtype.endswith("JointTrajectory"))


def commands_over(times: np.ndarray, values: np.ndarray, starts: np.ndarray, steps: int,
                  dt: float) -> tuple[np.ndarray, np.ndarray]:
    """What was commanded at each step of chunks starting at `starts` ([N] s): the recorded command in
    force at start + k*dt (zero-order hold), [N, steps, D], and whether the recording covers the whole
    chunk ([N] bool). One rule for offline replay, live replay and training targets."""
    at = np.asarray(starts, dtype=np.float64)[:, None] + np.arange(steps) * dt
    idx = np.clip(np.searchsorted(times, at, side="right") - 1, 0, len(times) - 1)
    covered = (at[:, 0] >= times[0]) & (at[:, -1] <= times[-1])
    return values[idx], covered


def add_commands(commands: list[tuple[float, np.ndarray]], stamp: float,
                 new: list[tuple[float, np.ndarray]], plan: bool) -> None:
    """Append a message's commands (messages in recording order). A `plan` (a JointTrajectory
    action chunk) replaces what earlier plans said for the time after its stamp, as the robot's
    executor switches to the newest chunk: overlapping chunks must not interleave their steps."""
    while plan and commands and commands[-1][0] > stamp:
        commands.pop()
    commands += new


def _commands(msg, msgtype: str, stamp: float, action_names: list[str],
              twist_mapping: list[str]) -> list[tuple[float, np.ndarray]]:
    """Recorded actions as (time, values in action_names order):
    Twist/TwistStamped via twist_mapping; JointTrajectory (an action_chunk: point k at stamp +
    time_from_start, later chunks overriding earlier ones where they overlap); JointState (velocity
    per joint, or position when there are no velocities)."""
    if msgtype in TWIST_TYPES:
        twist = msg.twist if hasattr(msg, "twist") else msg
        return [(stamp, np.array([_field(twist, f) for f in twist_mapping], dtype=np.float32))]
    names = list(msg.joint_names if msgtype.endswith("JointTrajectory") else msg.name)
    missing = [n for n in action_names if n not in names]
    if missing:
        raise BagError(f"{msgtype} has no joint(s) {missing} (joints: {names}); the model's actions are "
                       f"{action_names}")
    order = [names.index(n) for n in action_names]
    if msgtype.endswith("JointTrajectory"):
        return [(stamp + p.time_from_start.sec + p.time_from_start.nanosec * 1e-9,
                 np.asarray(p.positions, dtype=np.float32)[order]) for p in msg.points]
    values = msg.velocity if len(msg.velocity) else msg.position
    return [(stamp, np.asarray(values, dtype=np.float32)[order])]


def _field(twist, name: str) -> float:
    if not name:
        return 0.0
    group, axis = name.split(".")
    return float(getattr(getattr(twist, group), axis))
