"""Topic and frame names of the nodes' interface, in one place.

Topics are relative, so a namespace (`-r __ns:=/robot1`) applies to all of them; bags record absolute
names (`bag_topic`). Frames follow REP 105: `base_link` on the robot's base, `<sensor>_link` on each
sensor; the simulated robot's ground-truth pose is in `map`.
"""

from __future__ import annotations

# Inputs and outputs of vlm_node and action_expert_node.
IMAGE_TOPIC = "camera/image_raw"
SENSOR_TOPIC = "sensor"
INSTRUCTION_TOPIC = "instruction"
FEATURES_TOPIC = "vl_features"
CHUNK_TOPIC = "action_chunk"
CMD_VEL_TOPIC = "cmd_vel"

# What only the simulated robot publishes.
SIM_POSE_TOPIC = "sim/ground_truth_pose"
SIM_TASK_TOPIC = "sim/task"
SIM_EPISODE_RESULT_TOPIC = "sim/episode_result"
SIM_EXECUTED_CMD_VEL_TOPIC = "sim/executed_cmd_vel"

BASE_FRAME = "base_link"
CAMERA_FRAME = "camera_link"
SENSOR_FRAME = "imu_link"
MAP_FRAME = "map"


def bag_topic(topic: str) -> str:
    """The absolute name a recording of `topic` (without a namespace) has in a bag."""
    return topic if topic.startswith("/") else "/" + topic
