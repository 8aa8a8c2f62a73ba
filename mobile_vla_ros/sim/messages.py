"""The simulated robot's topics and their message contents, shared by sim_node (rclpy messages)
and mobile-vla-record-sim (rosbags messages): one place decides what a sim message holds."""

from __future__ import annotations

import json
import math

import numpy as np

from ..core import names as N
from .episode import EpisodeResult
from .world import Task

# Relative names (core/names.py), as the nodes use them; sim-only topics live under sim/.
TOPICS = {"image": N.IMAGE_TOPIC, "sensor": N.SENSOR_TOPIC, "instruction": N.INSTRUCTION_TOPIC,
          "cmd_vel": N.CMD_VEL_TOPIC, "pose": N.SIM_POSE_TOPIC, "task": N.SIM_TASK_TOPIC,
          "episode_result": N.SIM_EPISODE_RESULT_TOPIC, "executed_cmd_vel": N.SIM_EXECUTED_CMD_VEL_TOPIC}
FRAMES = {"image": N.CAMERA_FRAME, "sensor": N.SENSOR_FRAME, "pose": N.MAP_FRAME}
# Bags and the sim clock start here, not at zero: stamps near zero are treated as "unset" by some tools.
SIM_EPOCH = 1000.0


def task_json(task: Task) -> str:
    return json.dumps({"seed": task.seed, "instruction": task.instruction, "target": task.target,
                       "start": list(task.start),
                       "objects": [{"color": o.color, "shape": o.shape, "x": o.x, "y": o.y, "radius": o.radius}
                                   for o in task.objects]})


def result_json(result: EpisodeResult, episode: int) -> str:
    return json.dumps({"episode": episode, **result.to_dict()})


def yaw_quaternion(yaw: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation about z."""
    return 0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)


def split_stamp(t: float) -> tuple[int, int]:
    ns = int(round(t * 1e9))
    return ns // 1_000_000_000, ns % 1_000_000_000


# The IMU reports no orientation: covariance[0] = -1 is ROS's "orientation unknown" (REP 145).
ORIENTATION_UNKNOWN = np.array([-1.0] + [0.0] * 8)
