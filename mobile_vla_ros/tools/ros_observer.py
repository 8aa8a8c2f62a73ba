"""Watching a running system from outside its nodes: an rclpy node in the calling process that
records what arrives on topics (monotonic arrival time + message), reads /diagnostics and calls
parameter services, plus CPU/RSS sampling of node processes (psutil).

Used by bring-up (summary), the loop and soak benchmarks, and the system tests, so all of them
measure the same way.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from ..ros.node_support import LATCHED_QOS, SENSOR_QOS


class Recorder:
    """Arrival times (monotonic) and messages of one topic; `transform` keeps only what is needed.

    `with_info` is the subscription callback that also keeps each message's publication time (the
    publisher's system clock, from the middleware's message info): when the publisher sent it, which the
    observer's arrival time tells only as well as the observer's one thread keeps up."""

    def __init__(self, transform: Callable[[object], object] | None = None) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[float, object]] = []
        self.published: list[float] = []  # publication times (s, system clock) of items, with `with_info`
        self._transform = transform

    def __call__(self, msg) -> None:
        self._keep(msg, None)

    def with_info(self, msg, info) -> None:
        self._keep(msg, info["source_timestamp"] * 1e-9)

    def _keep(self, msg, published: float | None) -> None:
        now = time.monotonic()
        item = msg if self._transform is None else self._transform(msg)
        with self.lock:
            self.items.append((now, item))
            if published is not None:
                self.published.append(published)

    def since(self, t0: float) -> list[tuple[float, object]]:
        with self.lock:
            return [(t, m) for t, m in self.items if t >= t0]

    def published_since(self, t0: float) -> list[tuple[float, object]]:
        """(publication time, item) of the items that arrived at or after t0 (a `with_info` recorder)."""
        with self.lock:
            if len(self.published) != len(self.items):
                raise RuntimeError("this recorder keeps no publication times: subscribe with publish_times=True")
            return [(p, m) for (t, m), p in zip(self.items, self.published) if t >= t0]

    def count(self) -> int:
        with self.lock:
            return len(self.items)

    def rate(self, t0: float, t1: float) -> float:
        """Messages per second between t0 and t1 from the spacing of arrivals."""
        times = [t for t, _ in self.since(t0) if t <= t1]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])


def diagnostics_of(msg: DiagnosticArray) -> dict[str, dict[str, str]]:
    """hardware_id -> key/values of one /diagnostics message, plus `_message` and `_level` (a string:
    "0" OK, "1" WARN, "2" ERROR, "3" STALE) so that every value is a string."""
    return {s.hardware_id: {kv.key: kv.value for kv in s.values}
            | {"_message": s.message, "_level": str(int.from_bytes(s.level, "little"))} for s in msg.status}


class Observer:
    """An rclpy node spun by a SingleThreadedExecutor in a background thread; with `sim_time` its
    clock (`ros_now`) follows /clock, as the nodes' do.

    With `own_context` it gets a private rclpy context without rclpy's signal handlers, so it can
    live inside a command-line tool whose Ctrl-C handling stops other processes first.
    """

    def __init__(self, name: str, own_context: bool = False, sim_time: bool = False) -> None:
        self._context = None
        if own_context:
            self._context = rclpy.Context()
            rclpy.init(context=self._context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(name, context=self._context,
                                      parameter_overrides=[Parameter("use_sim_time", value=sim_time)])
        self.executor = SingleThreadedExecutor(context=self._context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self.recorders: dict[str, Recorder] = {}
        self._diagnostics: dict[str, dict[str, str]] = {}
        self._diag_lock = threading.Lock()

    def _subscribe(self, msg_type, topic: str, qos, transform, publish_times: bool = False):
        rec = Recorder(transform)
        return rec, self.node.create_subscription(msg_type, topic, rec.with_info if publish_times else rec, qos)

    def record(self, msg_type, topic: str, qos=LATCHED_QOS, transform=None, publish_times: bool = False) -> Recorder:
        """Every message on `topic` from now on (`recorders[topic]`); with `publish_times` also when each
        was published (`Recorder.published_since`)."""
        self.recorders[topic], _ = self._subscribe(msg_type, topic, qos, transform, publish_times)
        return self.recorders[topic]

    def record_sensor(self, msg_type, topic: str, transform=None) -> Recorder:
        # The profile's queue of 5, not the nodes' longer one: the observer stamps each message's arrival
        # when its callback runs, so a backlog of a 650 Hz stream would delay every other recording (a
        # 100-deep queue made one soak measure a stop 0.29 s late); it prefers fresh to complete.
        return self.record(msg_type, topic, SENSOR_QOS, transform)

    @contextlib.contextmanager
    def recording_sensor(self, msg_type, topic: str, transform=None):
        """A sensor-QoS Recorder for the `with` block only (a 650 Hz stream costs the observer CPU)."""
        rec, subscription = self._subscribe(msg_type, topic, SENSOR_QOS, transform)
        try:
            yield rec
        finally:
            self.node.destroy_subscription(subscription)

    def diagnostics(self) -> Recorder:
        """Every /diagnostics message; `latest_diagnostics` has the newest status per node."""
        return self.record(DiagnosticArray, "/diagnostics", 10, self._keep_latest)

    def _keep_latest(self, msg: DiagnosticArray) -> DiagnosticArray:
        with self._diag_lock:
            self._diagnostics.update(diagnostics_of(msg))
        return msg

    def latest_diagnostics(self, node_name: str) -> dict[str, str]:
        with self._diag_lock:
            return dict(self._diagnostics.get(node_name, {}))

    def _call(self, srv_type, service: str, request, timeout: float):
        service = service if service.startswith("/") else "/" + service
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
        return self._call(SetParameters, f"{node}/set_parameters",
                          SetParameters.Request(parameters=[msg]), timeout).results[0]

    def get_param(self, node: str, name: str, timeout: float = 5.0):
        response = self._call(GetParameters, f"{node}/get_parameters", GetParameters.Request(names=[name]),
                              timeout)
        return Parameter.from_parameter_msg(ParameterMsg(name=name, value=response.values[0])).value

    def describe_param(self, node: str, name: str, timeout: float = 5.0):
        """The ParameterDescriptor the node declared `name` with (read_only, ranges, ...)."""
        return self._call(DescribeParameters, f"{node}/describe_parameters",
                          DescribeParameters.Request(names=[name]), timeout).descriptors[0]

    def change_state(self, node: str, transition: str, timeout: float = 30.0) -> bool:
        """`ros2 lifecycle set <node> <transition>` (configure, activate, deactivate, cleanup, shutdown)."""
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request(transition=Transition(label=transition))
        return self._call(ChangeState, f"{node}/change_state", request, timeout).success

    def lifecycle_state(self, node: str, timeout: float = 5.0) -> str:
        """`ros2 lifecycle get <node>`: the state's label (unconfigured, inactive, active, finalized)."""
        from lifecycle_msgs.srv import GetState

        return self._call(GetState, f"{node}/get_state", GetState.Request(), timeout).current_state.label

    def ros_now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def destroy(self) -> None:
        """Stop spinning before destroying: a node destroyed under a spinning executor aborts at exit."""
        self.executor.shutdown(timeout_sec=2.0)
        self._thread.join(timeout=2.0)
        self.node.destroy_node()
        if self._context is not None and self._context.ok():
            rclpy.shutdown(context=self._context)


def wait_for(condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class ProcessSampler:
    """CPU % (of one core) and RSS of processes (psutil); `sample()` appends one point per process."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = dict(pids)
        self.samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in pids}  # (t, cpu%, rss MB)
        self._last: dict[str, tuple[float, float]] = {}

    @staticmethod
    def read(pid: int) -> tuple[float, float] | None:
        """(CPU seconds used so far, RSS in MB), None when the process is gone."""
        import psutil

        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                cpu, rss = proc.cpu_times(), proc.memory_info().rss
        except psutil.Error:
            return None
        return cpu.user + cpu.system, rss / 2**20

    def replace(self, name: str, pid: int) -> None:
        """`name` now runs as a new process (restarted): its series goes on from the new one."""
        self.pids[name] = pid
        self._last.pop(name, None)

    def sample(self) -> None:
        now = time.monotonic()
        for name, pid in self.pids.items():
            reading = self.read(pid)
            if reading is None:
                continue
            cpu, rss = reading
            if name in self._last:
                t0, cpu0 = self._last[name]
                self.samples[name].append((now, 100.0 * (cpu - cpu0) / max(now - t0, 1e-6), rss))
            self._last[name] = (now, cpu)


SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "vlm_node": ("feature_rate_hz", "vlm_hz", "forward_latency_p50_ms", "forward_latency_p99_ms",
                 "skipped_busy", "images_rejected", "clock_jumps"),
    "action_expert_node": ("chunk_rate_hz", "action_hz", "sensor_rate_hz", "feature_age_s",
                           "inference_latency_p50_ms", "inference_latency_p99_ms", "backend",
                           "safe_stop_events", "safe_stop_reason", "clock_jumps", "chunks_published",
                           "exhausted_chunk_steps"),
    "sync_baseline_node": ("chunk_rate_hz", "feature_rate_hz", "forward_latency_p50_ms", "sensor_accepted",
                           "safe_stop_reason"),
}


class DiagnosticsMonitor:
    """Listens to /diagnostics in this process and keeps the newest status of each node."""

    def __init__(self) -> None:
        # A private context without rclpy signal handlers: Ctrl-C must reach bring-up's own handler.
        self._observer = Observer("bringup_monitor", own_context=True)
        self._observer.diagnostics()

    def summary(self, nodes: tuple[str, ...]) -> str:
        lines = ["", "mobile-vla-bringup summary (last diagnostics of each node)"]
        for node in nodes:
            keys = SUMMARY_KEYS[node]
            values = self._observer.latest_diagnostics(node)
            if not values:
                lines.append(f"  {node}: no diagnostics received")
                continue
            lines.append(f"  {node}:")
            lines += [f"    {key:<26} {values.get(key, '-')}" for key in keys]
        return "\n".join(lines)

    def close(self) -> None:
        self._observer.destroy()
