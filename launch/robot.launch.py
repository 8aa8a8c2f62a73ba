"""Start vlm_node and action_expert_node with one parameter file.

  ros2 launch mobile_vla_ros robot.launch.py params_file:=/path/robot.yaml namespace:=robot1 \
      use_sim:=false log_level:=info

use_sim:=true also starts the simulated robot (sim_node) and sets use_sim_time on every node.
`mobile-vla-bringup` starts the same nodes with the same YAML where `ros2 launch` is not installed.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, GroupAction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PythonExpression
from launch_ros.actions import Node, PushRosNamespace

from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mobile_vla_ros")
    params_file = LaunchConfiguration("params_file")
    use_sim = LaunchConfiguration("use_sim")
    log_level = LaunchConfiguration("log_level")
    use_sim_time = PythonExpression(["'", use_sim, "' == 'true'"])

    def node(executable: str, condition=None) -> Node:
        return Node(package="mobile_vla_ros", executable=executable, name=executable, output="screen",
                    parameters=[params_file, {"use_sim_time": use_sim_time}],
                    arguments=["--ros-args", "--log-level", log_level], condition=condition)

    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "robot.yaml"),
                              description="ROS 2 parameter YAML for both nodes"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
        DeclareLaunchArgument("use_sim", default_value="false", description="start the simulated robot too"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug|info|warn|error"),
        GroupAction([
            PushRosNamespace(LaunchConfiguration("namespace")),
            node("vlm_node"),
            node("action_expert_node"),
            node("sim_node", condition=IfCondition(use_sim)),
        ]),
    ])
