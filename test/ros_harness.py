"""Helpers for tests that start the real nodes as processes and watch them over real DDS.

The machinery is the package's own (bring-up's NodeProcess, the benchmarks' Observer), so tests
and benchmarks start and watch nodes the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from mobile_vla_ros.tools.bringup.processes import NodeProcess
from mobile_vla_ros.tools.ros_observer import Observer, Recorder, diagnostics_of, wait_for

REPO = Path(__file__).resolve().parents[1]
__all__ = ["REPO", "NodeProcess", "Probe", "Recorder", "diag_values", "diagnostics_of", "lifecycle_state_once_up",
           "run_group", "start_group", "stop_group", "wait_for"]


class Probe(Observer):
    """The test's observer node, in the test session's rclpy context."""


def diag_values(recorder: Recorder, node_name: str) -> dict[str, str]:
    """Key/values (plus `_message`, `_level`) of the newest diagnostics status of `node_name`."""
    for _, msg in reversed(recorder.since(0.0)):
        values = diagnostics_of(msg).get(node_name)
        if values is not None:
            return values
    return {}


def lifecycle_state_once_up(probe: Probe, node: str, timeout: float = 2.0) -> str | None:
    """The node's lifecycle state, or None while no answer comes (the process still starting on a
    loaded machine, or a first request answered before discovery finished both ways): polling with
    `wait_for` retries instead of failing on the first unanswered request."""
    try:
        return probe.lifecycle_state(node, timeout)
    except TimeoutError:
        return None


def start_group(cmd: list[str], **popen_kwargs) -> subprocess.Popen:
    """Start a command that starts processes of its own (mobile-vla-bringup and its nodes) as the leader
    of a new process group, so that `stop_group` reaches its children too."""
    return subprocess.Popen(cmd, start_new_session=True, **popen_kwargs)


def stop_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    """SIGINT to the whole group (the bring-up stops its nodes), then SIGKILL to what is left after
    `grace` s. Killing the leader alone would leave its nodes running, loading every later test."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_group(cmd: list[str], timeout: float, grace: float = 15.0, **popen_kwargs) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True, timeout=...)` for such a command: on the
    timeout the whole group is stopped, not the leader alone."""
    proc = start_group(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_group(proc, grace)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
