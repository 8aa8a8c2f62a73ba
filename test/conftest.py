"""Test-session setup: an isolated DDS domain on loopback, and the ROS fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


def _private_domain() -> int:
    """A DDS domain for this test process and the nodes it starts. pytest-xdist's workers (gw0, gw1, ...)
    of one run take consecutive domains from the run's id, so they never share one; a run without
    workers takes one from its pid. A process a worker starts inherits its domain (the second-distro
    run, while that worker waits for it)."""
    run, worker = os.environ.get("PYTEST_XDIST_TESTRUNUID"), os.environ.get("PYTEST_XDIST_WORKER")
    if run and worker:
        return 1 + (int(run, 16) + int(worker.removeprefix("gw"))) % 100
    return 1 + os.getpid() % 100


# Every process of this test session (probe and node processes) talks on one private domain, on
# loopback only: parallel CI runs, a second test worker (-n 2) and other ROS systems on the machine cannot
# interfere.
os.environ["ROS_DOMAIN_ID"] = str(_private_domain())
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")


# Fixtures that start ROS: a test using one runs at full priority, one system test at a time.
ROS_FIXTURES = {"rclpy_session", "probe", "processes"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups below
def pytest_collection_modifyitems(config, items):
    """With `--dist loadgroup` (pytest.ini) every test joins one of two groups, each taken by one worker:
    `system` (marked: starts node processes or measures wall-clock time) and `compute` (the rest,
    run only on idle cores: pytest_runtest_setup). System tests never share the machine with each
    other, and the compute tests only take the CPU time the system tests leave idle. Tests marked `early`
    come first in their group (the Jazzy environment, built beside the system tests that need it)."""
    unmarked = [item.nodeid for item in items
                if ROS_FIXTURES & set(getattr(item, "fixturenames", ())) and not item.get_closest_marker("system")]
    if unmarked:
        raise pytest.UsageError(f"tests that start ROS must be marked `system`: {', '.join(unmarked)}")
    items.sort(key=lambda item: item.get_closest_marker("early") is None)  # stable: otherwise as collected
    if getattr(config.option, "loadgroup", False):  # what pytest-xdist tells a worker of `--dist loadgroup`
        for item in items:
            item.add_marker(pytest.mark.xdist_group("system" if item.get_closest_marker("system") else "compute"))


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: without pytest-xdist it is not called
def pytest_xdist_node_collection_finished(node, ids):
    """pytest-xdist tells the scheduler a test's group by a suffix on its id; with pytest 9.2 that suffix
    is silently lost and every test is scheduled on its own (pytest-xdist issue 1386), so system tests
    ran beside each other, some under the compute worker's SCHED_IDLE. Stop instead."""
    if node.config.getoption("dist") == "loadgroup" and any("@" not in test_id for test_id in ids):
        from importlib.metadata import version

        raise pytest.UsageError(
            f"pytest-xdist did not group the tests (pytest {version('pytest')}, pytest-xdist "
            f"{version('pytest-xdist')}): system tests would run beside each other; install the versions "
            f"in requirements/common.txt")


def pytest_runtest_setup(item):
    """A worker running compute tests puts every one of its threads (and so the threads and processes
    they start) under SCHED_IDLE, once: they run only on a core no other thread wants. (Linux keeps the
    policy per thread. Nice 19 was not enough: in a clean-clone run with the compute worker at nice 19
    beside it, the loop benchmark's chunks came at 4.5 instead of 10 per second.)"""
    if (os.environ.get("PYTEST_XDIST_WORKER") and item.get_closest_marker("xdist_group")
            and not item.get_closest_marker("system") and os.sched_getscheduler(0) != os.SCHED_IDLE):
        for thread_id in os.listdir("/proc/self/task"):
            os.sched_setscheduler(int(thread_id), os.SCHED_IDLE, os.sched_param(0))


@pytest.fixture(scope="session")
def rclpy_session():
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()


_probes = iter(range(1_000_000))


@pytest.fixture
def probe(rclpy_session):
    from ros_harness import Probe

    p = Probe(f"test_probe_{os.getpid()}_{next(_probes)}")
    yield p
    p.destroy()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Each phase's report on the test item (`item.report_call`, ...), for fixtures that act on failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def processes(request):
    """Start NodeProcess objects through this list; all are stopped when the test ends, pass or fail.
    When the test failed, the end of each node's log is printed (pytest shows it under the failure)."""
    from mobile_vla_ros.tools.bringup.processes import stop_all

    started = []
    yield started
    stop_all(started)
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        for process in started:
            print(f"--- {process.node_name} (pid {process.pid}, exit {process.proc.returncode}): end of its log ---")
            print(process.output()[-3000:])


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_kosmos2

    return build_tiny_kosmos2(tmp_path_factory.mktemp("tiny_kosmos2"), seed=1)


@pytest.fixture(scope="session")
def sim_bags(tmp_path_factory) -> Path:
    """Four short expert episodes of mobile-vla-record-sim (with the simulator's ground truth): training input."""
    from mobile_vla_ros.tools.simulation import record_sim

    root = tmp_path_factory.mktemp("sim_bags")
    assert record_sim.main(["--episodes", "4", "--seed", "20", "--out", str(root)]) == 0
    return root


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_clip_vision

    return build_tiny_clip_vision(tmp_path_factory.mktemp("tiny_clip"), seed=2)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), seed=3)
