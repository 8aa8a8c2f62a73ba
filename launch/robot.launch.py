"""Start vlm_node and action_expert_node with one parameter file (plus optional overrides).

  ros2 launch mobile_vla_ros robot.launch.py params_file:=/path/robot.yaml namespace:=robot1 \
      use_sim:=false log_level:=info extra_params_file:=/path/overrides.yaml

use_sim:=true also starts the simulated robot (sim_node), adds config/sim.yaml (sim_node's parameters,
CPU VLM) after params_file, and sets use_sim_time on every node (sim_node publishes /clock).
`mobile-vla-bringup` starts the same nodes with the same YAML where `ros2 launch` is not installed.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node


def _nodes(context):
    def arg(name: str) -> str:
        return context.launch_configurations[name]

    use_sim = arg("use_sim").lower() == "true"
    params = [arg("params_file")]
    if use_sim:
        params.append(os.path.join(get_package_share_directory("mobile_vla_ros"), "config", "sim.yaml"))
    if arg("extra_params_file"):
        params.append(arg("extra_params_file"))  # later files override earlier ones
    params.append({"use_sim_time": use_sim})
    executables = ["vlm_node", "action_expert_node"] + (["sim_node"] if use_sim else [])
    return [Node(package="mobile_vla_ros", executable=name, name=name, namespace=arg("namespace"),
                 output="screen", parameters=params, arguments=["--ros-args", "--log-level", arg("log_level")])
            for name in executables]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("mobile_vla_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "robot.yaml"),
                              description="ROS 2 parameter YAML for both nodes"),
        DeclareLaunchArgument("extra_params_file", default_value="",
                              description="optional second YAML whose values override params_file "
                                          "(e.g. config/desktop.yaml on a computer without a GPU)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
        DeclareLaunchArgument("use_sim", default_value="false", description="start the simulated robot too"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug|info|warn|error"),
        OpaqueFunction(function=_nodes),
    ])
