"""rclpy glue shared by both nodes: the managed-node (lifecycle) base, parameters declared from the
core specs, live-change validation, QoS profiles, diagnostics messages, and the common `main` wrapper.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.signals import SignalHandlerOptions
from std_msgs.msg import Header

from ..core import params as P
from ..core.names import SENSOR_TOPIC
from ..core.validation import check_instruction
from ..params_files import first_params_file_error, params_files_in

SENSOR_QOS = qos_profile_sensor_data
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
# Subscriptions to latched inputs (instruction, vl_features) keep a few: with depth 1, a message from
# a second publisher (or a malformed one) arriving before the node reads the queue would displace a
# valid one -- a rogue publisher could starve the node of features. Each is validated in order.
LATCHED_INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                               durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def sensor_input_qos(params: dict) -> QoSProfile:
    """The sensor subscription's QoS for a node's `sensor_hz` and `max_sensor_gap`: sensor data (best
    effort, volatile) with a queue of `sensor_queue_depth` samples instead of 5."""
    return QoSProfile(depth=sensor_queue_depth(params["sensor_hz"], params["max_sensor_gap"]),
                      history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.VOLATILE)


def sensor_queue_depth(sensor_hz: float, max_sensor_gap: float) -> int:
    """Samples the sensor subscription queues: half of `max_sensor_gap` of the stream (16 at 650 Hz and
    50 ms), at least sensor-data's 5. Five samples are 8 ms at 650 Hz: any longer stall of the node's
    executor (the GIL held by an inference, a GC pause, a loaded 2-core machine) overwrote samples the
    window needs, 5 % of the stream in one CI run. A longer queue rides such stalls out, but when the node
    falls behind for good it turns into latency: a queue of a whole window (100 ms) made every sample older
    than the gap gate and stopped the robot under a malformed-message flood. Half the gate keeps both."""
    return max(SENSOR_QOS.depth, int(0.5 * max_sensor_gap * sensor_hz))


def subscribe_draining(node: Node, msg_type: type, topic: str, callback: Callable[[Any], None],
                       qos: QoSProfile):
    """A subscription whose executor wake-up hands `callback` the message it took and then every message
    already queued behind it (up to one queue's worth, so timers are never starved). rclpy's executor
    rebuilds its whole wait set (a managed node's dozen services, timers, events) for each message it
    takes, and takes one per ready subscription per wake-up; at 650 Hz that cost ~1 ms per sample on
    this computer, so after any stall the action node could not drain its sensor queue before it
    overflowed: with both cores busy, 25 % of the stream was lost, and 1-7 % with one busy core; taking
    the queued samples in the same wake-up lost 0.02 % and under 0.1 % in the same runs. Every input
    of a node drains so, or a busy one would crowd out the others (the reliable features topic under a
    flood: 93 % taken while only the sensor drained, 98-100 % with all). The take is the call rclpy's own
    executor makes (Humble to Kilted)."""
    subscription = None

    def on_message(msg) -> None:
        callback(msg)
        for _ in range(qos.depth):
            with subscription.handle:
                taken = subscription.handle.take_message(subscription.msg_type, subscription.raw)
            if taken is None:
                return
            callback(taken[0])

    subscription = node.create_subscription(msg_type, topic, on_message, qos)
    return subscription


def subscribe_sensor(node: Node, msg_type: type, callback: Callable[[Any], None], params: dict):
    """The node's draining subscription to `sensor` with `sensor_input_qos`."""
    return subscribe_draining(node, msg_type, SENSOR_TOPIC, callback, sensor_input_qos(params))


_ROS_TYPES = {
    P.DOUBLE: Parameter.Type.DOUBLE, P.INTEGER: Parameter.Type.INTEGER, P.BOOL: Parameter.Type.BOOL,
    P.STRING: Parameter.Type.STRING, P.STRING_ARRAY: Parameter.Type.STRING_ARRAY,
    P.DOUBLE_ARRAY: Parameter.Type.DOUBLE_ARRAY,
}


class StartupError(RuntimeError):
    """Configuration that cannot work (bad parameter, model mismatch); the node exits non-zero."""


def descriptor(spec: P.ParamSpec) -> ParameterDescriptor:
    text = spec.description + ("" if spec.live else " (read-only at run time)")
    d = ParameterDescriptor(name=spec.name, type=_ROS_TYPES[spec.type].value, description=text,
                            read_only=not spec.live)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(repr(c) for c in spec.choices)
    if spec.type == P.DOUBLE and spec.low is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high))]
    if spec.type == P.INTEGER and spec.low is not None:
        d.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=1)]
    return d


def declare_from_specs(node: Node, specs: tuple[P.ParamSpec, ...]) -> dict[str, Any]:
    """Declare every parameter (YAML overrides apply), validate them all, return name -> value."""
    values = {}
    for spec in specs:
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except Exception as exc:  # rclpy raises on type/range violations of overrides
            raise StartupError(f"parameter {spec.name}: {exc}") from exc
        values[spec.name] = param.value
    problems = [r for s in specs if (r := P.validate(s, values[s.name])) is not None]
    if problems:
        raise StartupError("; ".join(problems))
    return values


def install_live_parameters(node: Node, specs: tuple[P.ParamSpec, ...], current: dict[str, Any],
                            check: Callable[[dict[str, Any]], str | None] | None,
                            apply: Callable[[dict[str, Any]], None]) -> None:
    """Validate run-time changes against the specs, then `check` (rules across parameters, if any) the
    would-be full set; apply on success. rclpy itself rejects what the descriptors say (read-only
    parameters, scalars out of range, wrong types) before this callback runs; what is left here is
    what descriptors cannot express: array lengths and ranges, choices, rules across parameters."""
    by_name = P.spec_by_name(specs)

    def on_set(parameters: list[Parameter]) -> SetParametersResult:
        changes = {}
        for p in parameters:
            spec = by_name.get(p.name)
            if spec is None:
                continue  # use_sim_time and other rclpy-owned parameters
            reason = P.validate(spec, p.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            changes[p.name] = p.value
        if changes:
            reason = None if check is None else check({**current, **changes})
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
            current.update(changes)
            apply(changes)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


class ManagedNode(LifecycleNode):
    """A lifecycle node (`ros2 lifecycle set <node> configure|activate|deactivate|cleanup|shutdown`).

    configure: `_configure` checks the parameters against the model files and loads what the node needs
    (models, inputs; each parameter's own range was checked when declared or live-set); a
    failure is logged, kept in `configure_error` for /diagnostics, undone, and leaves the node
    unconfigured and alive. activate: the lifecycle publishers are enabled, then `_activate` starts
    the timers. deactivate: `_deactivate` stops them and sends what must go out last (a zero
    `cmd_vel`), then the publishers are disabled. cleanup / shutdown: `_release` frees what
    configure loaded. With the `autostart` parameter, `run_node` configures and activates it at once.
    """

    def __init__(self, name: str, specs: tuple[P.ParamSpec, ...],
                 configure_errors: tuple[type[BaseException], ...] = ()) -> None:
        super().__init__(name)
        self.params = declare_from_specs(self, specs)
        self.configure_errors = (StartupError, *configure_errors)
        self.configure_error: str | None = None
        self.lifecycle_state = "unconfigured"

    # Hooks of the concrete node.
    def _configure(self) -> None:
        raise NotImplementedError

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    @property
    def active(self) -> bool:
        return self.lifecycle_state == "active"

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # rclpy would turn it into a silent ERROR transition
            expected = isinstance(exc, self.configure_errors)
            self.configure_error = str(exc) if expected else f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed, staying unconfigured: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self.lifecycle_state = "inactive"
        self.get_logger().info("configured (inactive): `ros2 lifecycle set` activate to start publishing")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._activate()
        self.lifecycle_state = "active"
        self.get_logger().info("active")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate()  # its last messages go out before the publishers are disabled
        self.lifecycle_state = "inactive"
        self.get_logger().info("inactive: publishing stopped, models stay loaded")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.lifecycle_state = "unconfigured"
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        if self.active:
            self._deactivate()
        self._release()
        self.lifecycle_state = "finalized"
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in a transition from {state.label}: releasing, back to unconfigured")
        if self.active:
            self._deactivate()
        self._release()
        self.lifecycle_state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def lifecycle_diagnostics(self) -> tuple[bytes, str] | None:
        """(level, message) while not active or, active, waiting for /clock (the node's own status
        otherwise)."""
        if self.lifecycle_state == "active":
            if waiting_for_clock(self):
                return DiagnosticStatus.WARN, "active, waiting for /clock (use_sim_time): no tick runs until it comes"
            return None
        if self.configure_error is not None:
            return DiagnosticStatus.ERROR, f"unconfigured: {self.configure_error}"
        return DiagnosticStatus.WARN, f"{self.lifecycle_state}: not publishing (ros2 lifecycle set to change)"

    def autostart(self) -> bool:
        """configure + activate when the `autostart` parameter says so; False if configure failed."""
        if not self.params.get("autostart", False):
            self.get_logger().info("autostart is false: waiting unconfigured for `ros2 lifecycle set "
                                   f"{self.get_fully_qualified_name()} configure`, then activate")
            return True
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return self.trigger_activate() == TransitionCallbackReturn.SUCCESS


def valid_instruction(node: Node, msg, max_length: int, counts: dict[str, int]) -> str | None:
    """The stripped instruction text, or None after counting and logging (throttled) why it was dropped."""
    text = msg.data.strip()
    reason = check_instruction(text, max_length)
    if reason is None:
        return text
    counts["instructions_rejected"] += 1
    node.get_logger().warning(f"instruction dropped: {reason}", throttle_duration_sec=5.0)
    return None


def diagnostics(node: Node, level: bytes, message: str, values: dict[str, Any]) -> DiagnosticArray:
    status = DiagnosticStatus(level=level, name=node.get_fully_qualified_name(), message=message,
                              hardware_id=node.get_name(),
                              values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()])
    return DiagnosticArray(header=_header(node), status=[status])


DIAGNOSTICS_PERIOD = 1.0  # s of steady time


def diagnostics_timer(node: Node, callback: Callable[[], None]):
    """/diagnostics once a second of steady time: under use_sim_time a node whose /clock never came (or
    stopped) still reports, which is when an operator needs it most."""
    from rclpy.clock import Clock, ClockType

    return node.create_timer(DIAGNOSTICS_PERIOD, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


def waiting_for_clock(node: Node) -> bool:
    """use_sim_time and no /clock received yet: the node's ROS-time timers cannot fire."""
    return node.get_clock().now().nanoseconds == 0 and bool(node.get_parameter("use_sim_time").value)


def _header(node: Node) -> Header:
    return Header(stamp=node.get_clock().now().to_msg())


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def watch_clock_jumps(node: Node, callback: Callable) -> object:
    """rclpy's jump callback on the node's clock (it fires when /clock jumps under use_sim_time): a
    backward step beyond CLOCK_JUMP_BACKWARD or a forward one beyond CLOCK_JUMP_FORWARD. Keep the
    returned handle. The nodes also compare their clock readings, which covers every clock type."""
    from rclpy.clock import JumpThreshold
    from rclpy.duration import Duration

    from ..core.validation import CLOCK_JUMP_BACKWARD, CLOCK_JUMP_FORWARD

    clock = node.get_clock()
    started = clock.now().nanoseconds > 0

    def on_jump(jump) -> None:
        # Under use_sim_time the clock reads 0 until the first /clock: that first step is the clock
        # starting, not a jump of a running one.
        nonlocal started
        if started:
            callback(jump)
        started = True

    threshold = JumpThreshold(min_forward=Duration(seconds=CLOCK_JUMP_FORWARD),
                              min_backward=Duration(seconds=-CLOCK_JUMP_BACKWARD), on_clock_change=True)
    return clock.create_jump_callback(threshold, post_callback=on_jump)


STOP_CHECK_PERIOD = 0.1  # s: the longest an idle node takes to notice SIGINT/SIGTERM


def run_node(factory: Callable[[], Node], args=None, on_shutdown: Callable[[Node], None] | None = None,
             startup_errors: tuple[type[BaseException], ...] = ()) -> int:
    """init, spin a SingleThreadedExecutor, destroy and shut down in `finally` (ros2/examples style).

    A SingleThreadedExecutor is deliberate: on a 2-core computer the MultiThreadedExecutor dropped
    most of a 650 Hz subscription; slow work runs in plain worker threads instead. rclpy's own
    signal handlers would invalidate the context before we could publish a final message, so
    SIGINT and SIGTERM only set a flag that the spin loop checks, and `on_shutdown` (a final zero
    cmd_vel) runs while the node can still publish. (Raising KeyboardInterrupt from the handler is
    not safe: landing inside rclpy's C++ message conversion it surfaces as a RuntimeError.)
    Configuration errors exit with code 2 and one fatal line. A fatal signal (SIGSEGV in a C extension,
    SIGABRT) writes every thread's Python stack to stderr (faulthandler) before the process dies, so a
    crash on a robot or in CI leaves where it happened in the node's log.
    """
    faulthandler.enable()
    bad_file = first_params_file_error(params_files_in(sys.argv if args is None else args))
    if bad_file:  # rcl would end in a traceback; one line instead
        print(f"[FATAL] [mobile_vla_ros]: start-up failed: {bad_file}", file=sys.stderr)
        return 2
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    node = executor = None
    code = 0
    logger = rclpy.logging.get_logger("mobile_vla_ros")
    try:
        node = factory()
        if isinstance(node, ManagedNode) and not node.autostart():
            # Started by autostart (launch, bring-up): fail fast, as a launch file's user expects.
            raise StartupError(node.configure_error or "activate failed")
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=STOP_CHECK_PERIOD)
    except (StartupError, *startup_errors) as exc:
        logger.fatal(f"start-up failed: {exc}")
        code = 2
    except (KeyboardInterrupt, ExternalShutdownException):  # a signal before our handlers were installed
        pass
    finally:
        # Stop the executor first (it releases its wait set and guard conditions), then send the
        # final message, then tear down.
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            if isinstance(node, ManagedNode) and node.lifecycle_state != "finalized":
                # Through the lifecycle: an active node deactivates (its final zero cmd_vel) and releases.
                if node.trigger_shutdown() != TransitionCallbackReturn.SUCCESS:
                    logger.error("shutdown transition failed")
                    code = code or 1
            if on_shutdown is not None:
                on_shutdown(node)  # a failure here must not look like a clean exit: it propagates
            try:
                node.destroy_node()
            except Exception as exc:  # after the final message; reported, not fatal
                logger.error(f"destroying the node failed: {exc!r}")
        if rclpy.ok():
            rclpy.shutdown()
    return code
