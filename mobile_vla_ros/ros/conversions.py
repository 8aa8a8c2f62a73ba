"""Every ROS message <-> numpy conversion of the package (nodes and tools import from here).

Images: decoded by core/images.py (ROS-free, shared with the bag tools), or by cv_bridge where ROS
provides it. Features travel as a 32FC1 image: height = tokens, width = dim.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Twist, TwistStamped, WrenchStamped
from sensor_msgs.msg import Image, Imu
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..core.chunk_executor import ActionChunk
from ..core.images import ConversionError, check_image, decode_rgb
from ..core.sensor_window import imu_sample, wrench_sample

FEATURE_ENCODING = "32FC1"


try:  # cv_bridge where ROS provides it (robot); the numpy path below is equivalent for these encodings
    from cv_bridge import CvBridge

    _CV_BRIDGE: CvBridge | None = CvBridge()
except ImportError:
    _CV_BRIDGE = None


def stamp_to_sec(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def sec_to_stamp(seconds: float) -> Time:
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def sec_to_duration(seconds: float) -> Duration:
    sec = int(np.floor(seconds))
    return Duration(sec=sec, nanosec=min(int(round((seconds - sec) * 1e9)), 999_999_999))


def image_to_rgb(msg: Image) -> np.ndarray:
    """sensor_msgs/Image -> RGB uint8 [H, W, 3] (a copy)."""
    if _CV_BRIDGE is None:
        return decode_rgb(msg)
    check_image(msg)  # cv_bridge does the colour conversion when present, after the same validation
    return np.ascontiguousarray(_CV_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))


def sample_to_imu(sample, stamp: Time, frame_id: str, orientation_unknown: bool = True) -> Imu:
    """[gyro xyz, accel xyz] -> sensor_msgs/Imu (the inverse of imu_sample); without orientation,
    covariance[0] = -1 as REP 145 asks."""
    msg = Imu(header=Header(stamp=stamp, frame_id=frame_id))
    if orientation_unknown:
        msg.orientation_covariance[0] = -1.0
    msg.angular_velocity.x, msg.angular_velocity.y, msg.angular_velocity.z = (float(v) for v in sample[:3])
    msg.linear_acceleration.x, msg.linear_acceleration.y, msg.linear_acceleration.z = (float(v) for v in sample[3:6])
    return msg


def sample_to_wrench(sample, stamp: Time, frame_id: str) -> WrenchStamped:
    """[force xyz, torque xyz] -> geometry_msgs/WrenchStamped (the inverse of wrench_sample)."""
    msg = WrenchStamped(header=Header(stamp=stamp, frame_id=frame_id))
    msg.wrench.force.x, msg.wrench.force.y, msg.wrench.force.z = (float(v) for v in sample[:3])
    msg.wrench.torque.x, msg.wrench.torque.y, msg.wrench.torque.z = (float(v) for v in sample[3:6])
    return msg


def sample_to_message(sensor_type: str, sample, stamp: Time, frame_id: str):
    """A sensor sample as the message of `sensor_type` (imu | wrench)."""
    return sample_to_imu(sample, stamp, frame_id) if sensor_type == "imu" else sample_to_wrench(sample, stamp, frame_id)


def rgb_to_image(rgb: np.ndarray, stamp: Time, frame_id: str) -> Image:
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    h, w = rgb.shape[:2]
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=h, width=w, encoding="rgb8",
                 is_bigendian=0, step=w * 3, data=rgb.tobytes())


def features_to_image(features: np.ndarray, stamp: Time, frame_id: str) -> Image:
    """float32 [tokens, dim] -> 32FC1 image, little-endian."""
    arr = np.ascontiguousarray(features, dtype="<f4")
    if arr.ndim != 2:
        raise ConversionError(f"features must be [tokens, dim], got shape {list(arr.shape)}")
    return Image(header=Header(stamp=stamp, frame_id=frame_id), height=arr.shape[0], width=arr.shape[1],
                 encoding=FEATURE_ENCODING, is_bigendian=0, step=arr.shape[1] * 4, data=arr.tobytes())


def image_to_features(msg: Image) -> np.ndarray:
    """32FC1 image -> float32 [tokens, dim] (native byte order)."""
    if msg.encoding != FEATURE_ENCODING:
        raise ConversionError(f"vl_features encoding expected {FEATURE_ENCODING}, got {msg.encoding!r}")
    h, w = msg.height, msg.width
    if msg.step != w * 4 or len(msg.data) != h * w * 4 or h == 0 or w == 0:
        raise ConversionError(f"vl_features {h}x{w}: step {msg.step} / {len(msg.data)} bytes do not match "
                              f"{w * 4} / {h * w * 4}")
    order = ">" if msg.is_bigendian else "<"
    return np.frombuffer(msg.data, dtype=f"{order}f4").reshape(h, w).astype(np.float32)


SENSOR_MESSAGES = {"imu": (Imu, imu_sample), "wrench": (WrenchStamped, wrench_sample)}


def chunk_to_trajectory(chunk: ActionChunk, joint_names: list[str], frame_id: str = "") -> JointTrajectory:
    msg = JointTrajectory(header=Header(stamp=sec_to_stamp(chunk.stamp), frame_id=frame_id),
                          joint_names=list(joint_names))
    msg.points = [JointTrajectoryPoint(positions=[float(v) for v in row],
                                       time_from_start=sec_to_duration((k + 1) * chunk.dt))
                  for k, row in enumerate(chunk.actions)]
    return msg


def trajectory_to_actions(msg: JointTrajectory) -> np.ndarray:
    return np.array([p.positions for p in msg.points], dtype=np.float32)


def action_to_twist(values: np.ndarray, mapping: list[str]) -> Twist:
    """Map action dims to Twist fields, e.g. mapping ['linear.x', 'angular.z']; '' = unused."""
    twist = Twist()
    for value, field in zip(values, mapping):
        if field:
            group, axis = field.split(".")
            setattr(getattr(twist, group), axis, float(value))
    return twist


def stamped(twist: Twist, stamp: Time, frame_id: str) -> TwistStamped:
    return TwistStamped(header=Header(stamp=stamp, frame_id=frame_id), twist=twist)


def twist_to_action(twist: Twist, mapping: list[str]) -> np.ndarray:
    """The inverse of action_to_twist: the action vector a Twist carries ('' fields read as 0)."""
    values = []
    for field in mapping:
        group, _, axis = field.partition(".")
        values.append(float(getattr(getattr(twist, group), axis)) if field else 0.0)
    return np.asarray(values, dtype=np.float32)
