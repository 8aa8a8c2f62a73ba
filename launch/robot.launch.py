"""Start vlm_node and action_expert_node (managed nodes) with one parameter file plus optional overrides.

  ros2 launch mobile_vla_ros robot.launch.py params_file:=/path/robot.yaml namespace:=robot1 \
      use_sim:=false log_level:=info extra_params_file:=/path/overrides.yaml

use_sim:=true also starts the simulated robot (sim_node), loads config/sim.yaml after params_file
(`params_file_order`, the rule mobile-vla-bringup uses too) and sets use_sim_time on every node
(sim_node publishes /clock).

The policy nodes are lifecycle nodes. Each arms itself when its `autostart` parameter is true
(config/sim.yaml, config/desktop.yaml), the same way under `mobile-vla-bringup` and `ros2 run`, so
this file sends no transition events; with autostart false (config/robot.yaml's action_expert_node)
the operator arms it: `ros2 lifecycle set /action_expert_node configure`, then `activate`.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

from mobile_vla_ros.params_files import params_file_order

POLICY_NODES = ("vlm_node", "action_expert_node")


def _parameters(context) -> list:
    """The parameter files in the order mobile-vla-bringup uses too (`params_file_order`), then use_sim_time."""
    config = Path(get_package_share_directory("mobile_vla_ros")) / "config"
    use_sim = LaunchConfiguration("use_sim").perform(context).lower() == "true"
    files = [LaunchConfiguration("params_file").perform(context), LaunchConfiguration("extra_params_file").perform(
        context)]
    return [*map(str, params_file_order([Path(f) for f in files if f], use_sim, config)), {"use_sim_time": use_sim}]


def _nodes(context) -> list:
    # Only the parameter list needs Python (one ordering rule shared with bring-up); the rest is substitutions.
    common = {"package": "mobile_vla_ros", "namespace": LaunchConfiguration("namespace"), "output": "screen",
              "parameters": _parameters(context),
              "arguments": ["--ros-args", "--log-level", LaunchConfiguration("log_level")]}
    return [*(LifecycleNode(executable=name, name=name, **common) for name in POLICY_NODES),
            Node(executable="sim_node", name="sim_node", condition=IfCondition(LaunchConfiguration("use_sim")),
                 **common)]


def generate_launch_description() -> LaunchDescription:
    config = Path(get_package_share_directory("mobile_vla_ros")) / "config"
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value=str(config / "robot.yaml"),
                              description="ROS 2 parameter YAML for both nodes"),
        DeclareLaunchArgument("extra_params_file", default_value="",
                              description="optional YAML whose values override params_file (and sim.yaml), "
                                          "e.g. config/desktop.yaml on a computer without a GPU"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of all nodes"),
        DeclareLaunchArgument("use_sim", default_value="false",
                              description="true: also start the simulated robot (sim_node), on its clock, with "
                                          "config/sim.yaml"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug | info | warn | error"),
        OpaqueFunction(function=_nodes),
    ])
