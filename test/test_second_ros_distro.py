"""The README says Humble, Jazzy and Kilted: the ROS-facing tests of what differs between distros (real
node processes over DDS, parameters, QoS, clock jumps, lifecycle, start-up errors, bring-up) run a second
time against ROS 2 Jazzy, in their own environment (`scripts/install.sh --jazzy` -> .venv-jazzy: the Jazzy
wheels, and .venv's ML stack linked in). The main suite runs on Kilted; Humble (the robot's) is the apt
install and is not installable here. Building the environment is a test of its own, a compute test that
runs early, so that with two test workers it is ready by the time the system tests reach the Jazzy run."""

from __future__ import annotations

import fcntl
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What differs between distros is rclpy's and rcl's surface: parameters (declared, set live, from YAML),
# QoS, time sources and clock jumps, lifecycle, start-up failures, processes. These tests exercise each of
# it. The other tests of their files, and the reliability and safe-stop files, drive the same
# subscriptions, timers and parameters with other inputs (a slow VLM, floods, a killed node, NaN models,
# stale features, models that do not match, process supervision): the rules they check live in the core
# or in this package's process handling, so they run on Kilted only -- running them twice doubled CI's
# exposure to a loaded machine for no new coverage.
ROS_FACING = [
    "test/test_system_rates.py::test_features_and_chunks_at_their_rates_with_contract_shapes",
    "test/test_system_rates.py::test_rates_change_live_and_bad_values_are_rejected",
    "test/test_system_rates.py::test_live_safety_parameters_take_effect",
    "test/test_time_faults_system.py",
    "test/test_lifecycle_system.py",
    "test/test_startup_errors.py::test_action_node_refuses_parameters_that_contradict_model_yaml",
    "test/test_startup_errors.py::test_out_of_range_yaml_value_stops_start_up",
    "test/test_startup_errors.py::test_a_malformed_parameter_file_ends_in_one_line_naming_file_and_line",
    "test/test_bringup.py::test_bringup_runs_nodes_in_namespace_with_yaml",
]
INNER = "MOBILE_VLA_SECOND_DISTRO"


def jazzy_env() -> dict[str, str]:
    """This process's environment without what the Kilted wheels set up at start-up (their library path
    and the flag that says it is done): the Jazzy interpreter must set up its own."""
    return {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE")}


JAZZY_PYTHON = REPO / ".venv-jazzy" / "bin" / "python"


def install_jazzy(if_missing: bool) -> None:
    """`scripts/install.sh --jazzy`, one process at a time (a lock beside the environment); with
    `if_missing`, only when .venv-jazzy does not import rclpy yet."""
    with open(REPO / ".venv-jazzy.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if if_missing and JAZZY_PYTHON.exists() and subprocess.run(
                [str(JAZZY_PYTHON), "-c", "import rclpy"], capture_output=True, env=jazzy_env()).returncode == 0:
            return
        install = subprocess.run(["bash", "scripts/install.sh", "--jazzy"], cwd=REPO, capture_output=True, text=True,
                                 timeout=900, env=jazzy_env())
        assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]


@pytest.mark.early  # with two test workers it builds .venv-jazzy while the other runs system tests
@pytest.mark.timeout(900)
@pytest.mark.skipif(os.environ.get(INNER) == "1", reason="this is the second-distro run itself")
def test_the_jazzy_environment_has_jazzy_and_this_environments_ml_stack():
    install_jazzy(if_missing=False)  # brings an existing .venv-jazzy up to date too
    which = ("import importlib.metadata as m, os, rclpy, torch; print(m.version('ros-jazzy-rclpy')); "
             "print(os.path.realpath(torch.__file__))")
    distro = subprocess.run([str(JAZZY_PYTHON), "-c", which], capture_output=True, text=True, timeout=60,
                            env=jazzy_env())
    assert distro.returncode == 0, distro.stderr
    rclpy_version, torch_file = distro.stdout.split()
    assert rclpy_version.startswith("7."), rclpy_version
    # The same ML stack: the files of this environment, linked (scripts/link_ml_stack.py), not a copy.
    assert torch_file == os.path.realpath(importlib.util.find_spec("torch").origin), (
        f"Jazzy imports torch from {torch_file}, not .venv's files: a .venv-jazzy made before the ML stack was "
        f"linked keeps its own copy; remove .venv-jazzy and run again")


@pytest.mark.system
@pytest.mark.timeout(1800)
@pytest.mark.skipif(os.environ.get(INNER) == "1", reason="this is the second-distro run itself")
def test_the_ros_facing_tests_pass_on_ros2_jazzy():
    install_jazzy(if_missing=True)
    result = subprocess.run([str(JAZZY_PYTHON), "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider", *ROS_FACING],
                            cwd=REPO, capture_output=True, text=True, timeout=1500, env={**jazzy_env(), INNER: "1"})
    print(result.stdout[-3000:])
    # The failures section starts with each failed assertion; its captured node logs follow and would push
    # the assertion out of a tail of the output.
    failures = result.stdout[result.stdout.find("= FAILURES ="):][:6000] if "= FAILURES =" in result.stdout else ""
    assert result.returncode == 0, failures + "\n...\n" + result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1] and sys.executable != str(JAZZY_PYTHON)
