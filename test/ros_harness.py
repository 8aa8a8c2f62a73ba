"""Helpers for tests that start the real nodes as processes and watch them over real DDS.

The machinery is the package's own (bring-up's NodeProcess, the benchmarks' Observer), so tests
and benchmarks start and watch nodes the same way.
"""

from __future__ import annotations

from pathlib import Path

from mobile_vla_ros.tools.bringup.processes import NodeProcess
from mobile_vla_ros.tools.ros_observer import Observer, Recorder, diagnostics_of, wait_for

REPO = Path(__file__).resolve().parents[1]
__all__ = ["REPO", "NodeProcess", "Probe", "Recorder", "diag_values", "diagnostics_of", "wait_for"]


class Probe(Observer):
    """The test's observer node, in the test session's rclpy context."""


def diag_values(recorder: Recorder, node_name: str) -> dict[str, str]:
    """Key/values (plus `_message`, `_level`) of the newest diagnostics status of `node_name`."""
    for _, msg in reversed(recorder.since(0.0)):
        values = diagnostics_of(msg).get(node_name)
        if values is not None:
            return values
    return {}
