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


def pytest_collection_modifyitems(items):
    """Files with a `long` test first, in collection order otherwise (a stable sort): with `-n 2 --dist
    loadfile` (two workers taking whole files), a long file started last would leave one worker idle."""
    long_files = {item.path for item in items if item.get_closest_marker("long")}
    items.sort(key=lambda item: item.path not in long_files)


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


@pytest.fixture
def processes():
    """Start NodeProcess objects through this list; all are stopped when the test ends, pass or fail."""
    from mobile_vla_ros.tools.bringup.processes import stop_all

    started = []
    yield started
    stop_all(started)


@pytest.fixture(scope="session")
def tiny_vlm_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_kosmos2

    return build_tiny_kosmos2(tmp_path_factory.mktemp("tiny_kosmos2"), seed=1)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_clip_vision

    return build_tiny_clip_vision(tmp_path_factory.mktemp("tiny_clip"), seed=2)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory) -> Path:
    from mobile_vla_ros.vlm.tiny import build_tiny_qwen2_5_vl

    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny_qwen2_5_vl"), seed=3)
