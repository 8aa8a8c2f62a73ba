"""`robot.launch.py use_sim:=true` on a ROS install: the launch file starts the simulated robot and
both managed nodes (autostart from config/sim.yaml), chunks flow on `action_chunk` and an episode
ends on `sim/episode_result`.

The launch file runs in a child process through `launch.LaunchService`, which is what `ros2 launch`
runs. It needs `launch`, `launch_ros` and this package in the ament index (a ROS 2 install with
colcon build); they are not on PyPI, so the test is skipped where they are missing (CI here), with
that reason.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ros_harness import wait_for
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.system

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "robot.launch.py"
RUN_LAUNCH = """
import sys
import launch
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = launch.LaunchService()
arguments = [tuple(a.split(":=", 1)) for a in sys.argv[2:]]
service.include_launch_description(IncludeLaunchDescription(PythonLaunchDescriptionSource(sys.argv[1]),
                                                            launch_arguments=arguments))
sys.exit(service.run())
"""


def launch_missing() -> str | None:
    try:
        import launch  # noqa: F401
        import launch_ros  # noqa: F401
        from ament_index_python.packages import get_package_share_directory

        get_package_share_directory("mobile_vla_ros")
    except Exception as exc:  # ImportError, PackageNotFoundError
        return (f"needs launch, launch_ros and mobile_vla_ros built by colcon (a ROS 2 install): "
                f"{type(exc).__name__}: {exc}")
    return None


@pytest.mark.skipif(launch_missing() is not None, reason=str(launch_missing()))
@pytest.mark.timeout(240)
def test_robot_launch_with_the_simulated_robot_drives_an_episode(probe, tmp_path):
    chunks = probe.record(JointTrajectory, "action_chunk", 10)
    results = probe.record(String, "sim/episode_result", 10, transform=lambda msg: json.loads(msg.data))
    log = (tmp_path / "launch.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", RUN_LAUNCH, str(LAUNCH_FILE), "use_sim:=true"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: chunks.count() >= 5, 120, "action_chunk from the launched nodes")
        assert probe.lifecycle_state("action_expert_node") == "active"
        assert probe.lifecycle_state("vlm_node") == "active"
        wait_for(lambda: results.count() >= 1, 90, "an episode result")
        assert {"success", "duration"} <= set(results.since(0.0)[0][1])
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        print((tmp_path / "launch.log").read_text()[-3000:])
