"""Helpers for tests that start the real nodes as processes and watch them over real DDS.

`NodeProcess` starts `python -m mobile_vla_ros.<module> --ros-args ...` with a parameter file and
always stops it (SIGINT, then kill). `Probe` is an rclpy node in the test process that records
what arrives on topics (arrival time on the monotonic clock + the message) and calls parameter
services.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import rclpy
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from mobile_vla_ros.ros.node_support import LATCHED_QOS, SENSOR_QOS

REPO = Path(__file__).resolve().parents[1]


class NodeProcess:
    def __init__(self, module: str, params: dict | None = None, node_name: str | None = None,
                 extra_args: list[str] = ()) -> None:
        self.module = module
        self.node_name = node_name or module.split(".")[-1]
        cmd = [sys.executable, "-m", f"mobile_vla_ros.{module}", "--ros-args"]
        if params:
            fd, path = tempfile.mkstemp(suffix=".yaml", prefix=f"{self.node_name}_")
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump({f"/**/{self.node_name}": {"ros__parameters": params}}, fh)
            self.params_file = path
            cmd += ["--params-file", path]
        cmd += list(extra_args)
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.node_name}_", suffix=".log", delete=False)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


class Recorder:
    """Arrival times (monotonic) and messages of one topic."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[float, object]] = []

    def __call__(self, msg) -> None:
        with self.lock:
            self.items.append((time.monotonic(), msg))

    def since(self, t0: float) -> list[tuple[float, object]]:
        with self.lock:
            return [(t, m) for t, m in self.items if t >= t0]

    def count(self) -> int:
        with self.lock:
            return len(self.items)

    def rate(self, t0: float, t1: float) -> float:
        """Messages per second between t0 and t1 from the spacing of arrivals."""
        times = [t for t, _ in self.since(t0) if t <= t1]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])


class Probe:
    def __init__(self, name: str = "test_probe") -> None:
        self.node = Node(name)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.recorders: dict[str, Recorder] = {}

    def record(self, msg_type, topic: str, qos=LATCHED_QOS) -> Recorder:
        rec = Recorder()
        self.node.create_subscription(msg_type, topic, rec, qos)
        self.recorders[topic] = rec
        return rec

    def record_sensor(self, msg_type, topic: str) -> Recorder:
        return self.record(msg_type, topic, SENSOR_QOS)

    def diagnostics(self) -> Recorder:
        return self.record(DiagnosticArray, "/diagnostics", 10)

    def _call(self, srv_type, service: str, request, timeout: float):
        client = self.node.create_client(srv_type, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"{service} not available")
            future = client.call_async(request)
            deadline = time.monotonic() + timeout
            while not future.done():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{service} did not answer in {timeout} s")
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def set_param(self, node: str, name: str, value, timeout: float = 5.0):
        """Returns the SetParametersResult (successful, reason)."""
        msg: ParameterMsg = Parameter(name, value=value).to_parameter_msg()
        return self._call(SetParameters, f"/{node}/set_parameters",
                          SetParameters.Request(parameters=[msg]), timeout).results[0]

    def get_param(self, node: str, name: str, timeout: float = 5.0):
        response = self._call(GetParameters, f"/{node}/get_parameters", GetParameters.Request(names=[name]),
                              timeout)
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=response.values[0])).value

    def destroy(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def diag_values(recorder: Recorder, node_name: str) -> dict[str, str]:
    """Key/values of the newest diagnostics status of `node_name`."""
    for _, msg in reversed(recorder.since(0.0)):
        for status in msg.status:
            if status.hardware_id == node_name:
                return {kv.key: kv.value for kv in status.values} | {"_message": status.message,
                                                                     "_level": status.level}
    return {}


def init_rclpy() -> None:
    if not rclpy.ok():
        rclpy.init()
