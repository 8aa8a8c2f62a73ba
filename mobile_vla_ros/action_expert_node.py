"""action_expert_node: latest VL features + latest sensor window -> 8-step action chunk at `action_hz`,
and (with `execute_chunks`) the chunks executed step by step as velocity commands on `cmd_vel`.

Subscriptions only translate messages and feed the ROS-free ActionExpertCore; the tick asks the
core for a chunk or a stop reason. While stopped no chunk is published and `cmd_vel` is zero for
`zero_cmd_hold` seconds, then silent.
"""

from __future__ import annotations

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from .core.action_pipeline import ActionExpertCore
from .core.backend_factory import create_backend
from .core.backends import BackendUnavailable
from .core.model_spec import ModelSpec, ModelSpecError, check_params
from .core.names import CHUNK_TOPIC, FEATURES_TOPIC
from .core.params import ACTION_NODE_PARAMS
from .core.safety import StopReason
from .core.scheduling import period_from_hz
from .core.sensor_window import PushResult
from .core.stats import RateMeter
from .paths import default_model_dir, resolve_dir
from .ros.command_output import CommandOutput
from .ros.conversions import SENSOR_MESSAGES, ConversionError, chunk_to_trajectory, image_to_features, stamp_to_sec
from .ros.node_support import (
    LATCHED_INPUT_QOS,
    RELIABLE_QOS,
    ManagedNode,
    StartupError,
    diagnostics,
    diagnostics_timer,
    install_live_parameters,
    run_node,
    subscribe_draining,
    subscribe_sensor,
    valid_instruction,
    watch_clock_jumps,
)


def load_action_core(p: dict, log) -> ActionExpertCore:
    """model.yaml checked against the parameters, the backend created, the core ready to tick."""
    model_dir = resolve_dir(p["model_dir"], default_model_dir())
    spec = ModelSpec.load(model_dir)
    problems = check_params(spec, p)
    if problems:
        raise StartupError(f"{model_dir}/model.yaml does not match the node parameters: " + "; ".join(problems))
    start = time.monotonic()
    backend = create_backend(p["backend"], model_dir, spec, p["engine_cache_dir"] or None, log=log)
    log(f"model {model_dir} on {backend.name} ready in {time.monotonic() - start:.2f} s")
    return ActionExpertCore(spec, backend, p["max_feature_age"], p["max_sensor_gap"], p["twist_mapping"])


class ActionExpertNode(ManagedNode):
    """Managed: configure checks model.yaml against the parameters, loads the backend and subscribes
    (the sensor window and features fill while inactive); activate starts the decisions and the
    execution on `cmd_vel`; deactivate stops both with a zero `cmd_vel` at once (the model stays loaded)."""

    def __init__(self) -> None:
        # Before the base class: a parameter error there destroys the node, which calls _release.
        self.core: ActionExpertCore | None = None
        self.spec = self.output = self.chunk_pub = self._action_timer = self._jump_handle = None
        self._inputs: list = []
        super().__init__("action_expert_node", ACTION_NODE_PARAMS,
                         configure_errors=(ModelSpecError, BackendUnavailable))
        self.chunk_rate = RateMeter()
        self.sensor_rate = RateMeter()
        self.counts = {"sensor_rejected": 0, "instructions_rejected": 0}
        self._jumps_seen = 0
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        diagnostics_timer(self, self._publish_diagnostics)
        install_live_parameters(self, ACTION_NODE_PARAMS, self.params, self._check_live, self._apply_live)

    def _configure(self) -> None:
        p = self.params
        self.core = load_action_core(p, self.get_logger().info)
        self.spec = self.core.spec
        self._jumps_seen = self.core.clock_jumps
        self.chunk_pub = self.create_lifecycle_publisher(JointTrajectory, CHUNK_TOPIC, RELIABLE_QOS)
        self.output = CommandOutput(self, self.core, p)
        msg_type, self._to_sample = SENSOR_MESSAGES[p["sensor_type"]]
        self._inputs = [subscribe_sensor(self, msg_type, self._on_sensor, p),
                        subscribe_draining(self, Image, FEATURES_TOPIC, self._on_features, LATCHED_INPUT_QOS),
                        subscribe_draining(self, String, "instruction", self._on_instruction, LATCHED_INPUT_QOS)]
        self._jump_handle = watch_clock_jumps(self, self._on_clock_jump)

    def _activate(self) -> None:
        self.output.start()
        self._action_timer = self.create_timer(period_from_hz(self.params["action_hz"]), self._on_action_tick)

    def _deactivate(self) -> None:
        if self._action_timer is not None:
            self.destroy_timer(self._action_timer)
            self._action_timer = None
        self.output.stop()  # zero cmd_vel now

    def _release(self) -> None:
        for subscription in self._inputs:
            self.destroy_subscription(subscription)
        self._inputs, self._jump_handle = [], None
        if self.output is not None:
            self.output.close()
            self.output = None
        if self.chunk_pub is not None:
            self.destroy_lifecycle_publisher(self.chunk_pub)
            self.chunk_pub = None
        if self.core is not None:
            close = getattr(self.core.backend, "close", None)
            if close is not None:
                close()  # TensorRT: device and pinned buffers, the CUDA graph
            self.core = self.spec = None

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    # -- parameters -----------------------------------------------------------------------------
    def _check_live(self, values: dict) -> str | None:
        if self.spec is None:
            return None  # unconfigured: configure checks them against model.yaml
        problems = check_params(self.spec, values)
        return "; ".join(problems) if problems else None

    def _apply_live(self, changes: dict) -> None:
        core, p = self.core, self.params
        self.get_logger().info("parameters changed: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        if core is None:
            return  # unconfigured: configure reads them
        core.set_limits(p["max_feature_age"], p["max_sensor_gap"])
        self.output.apply_live(changes)
        if "action_hz" in changes and self._action_timer is not None:
            self.destroy_timer(self._action_timer)
            self._action_timer = self.create_timer(period_from_hz(p["action_hz"]), self._on_action_tick)

    # -- clock jumps ----------------------------------------------------------------------------
    def _on_clock_jump(self, jump=None) -> None:
        """rclpy's jump callback (sim time) or a jump the core saw in the clock readings."""
        if jump is not None:
            self.core.clock_jumped(self._now())
        self._after_clock_jump()

    def _after_clock_jump(self) -> None:
        if self.core.clock_jumps == self._jumps_seen:
            return
        self._jumps_seen = self.core.clock_jumps
        self.output.on_chunk(None, was_running=True)
        self.output.publish_zero()  # now, not at the next tick
        self.get_logger().warning("clock jumped: sensor window, features and motion cleared; stopped until "
                                  "fresh data arrive", throttle_duration_sec=1.0)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_sensor(self, msg) -> None:
        result = self.core.on_sensor(stamp_to_sec(msg.header.stamp), self._to_sample(msg), self._now())
        self._after_clock_jump()
        if result is PushResult.ACCEPTED:
            self.sensor_rate.tick()
        else:
            self.counts["sensor_rejected"] += 1
            self.get_logger().warning(f"sensor sample dropped: {result.value}", throttle_duration_sec=5.0)

    def _on_features(self, msg: Image) -> None:
        try:
            reason = self.core.on_features(image_to_features(msg), stamp_to_sec(msg.header.stamp), self._now())
        except ConversionError as exc:
            reason = str(exc)
            self.core.rejected_features += 1
        if reason is not None:
            self.get_logger().warning(f"features dropped: {reason}", throttle_duration_sec=5.0)

    def _on_instruction(self, msg: String) -> None:
        text = valid_instruction(self, msg, self.params["max_instruction_length"], self.counts)
        if text is not None and self.core.on_instruction(text, self._now()):
            self.get_logger().info(f"instruction: {text!r}")

    # -- ticks ----------------------------------------------------------------------------------
    def _on_action_tick(self) -> None:
        previous = self.core.safety.reason
        result = self.core.tick(self._now())
        self._after_clock_jump()
        if result.reason is not previous:
            if result.chunk is None:
                self.get_logger().warning(f"safe stop: {self.core.safety.describe()}")
            else:
                self.get_logger().info("running: inputs fresh, publishing chunks")
        self.output.on_chunk(result.chunk, was_running=previous is StopReason.NONE)
        if result.chunk is not None:
            self.chunk_pub.publish(chunk_to_trajectory(result.chunk, self.spec.action_names))
            self.chunk_rate.tick()

    def _publish_diagnostics(self) -> None:
        status = self.lifecycle_diagnostics()
        if status is not None and self.core is None:
            self.diag_pub.publish(diagnostics(self, *status, {"lifecycle_state": self.lifecycle_state}))
            return
        core, safety = self.core, self.core.safety
        level = DiagnosticStatus.OK if not safety.stopped else DiagnosticStatus.WARN
        if safety.reason in (StopReason.INFERENCE_ERROR, StopReason.NON_FINITE_OUTPUT):
            level = DiagnosticStatus.ERROR
        age = core.features.age(self._now())
        values = {
            "lifecycle_state": self.lifecycle_state, "backend": core.backend.name,
            "action_hz": self.params["action_hz"],
            "chunk_rate_hz": self.chunk_rate.rate(), "sensor_rate_hz": self.sensor_rate.rate(),
            "sensor_accepted": self.sensor_rate.total,
            "feature_age_s": float("nan") if age is None else age,
            "inference_latency_p50_ms": core.latency.percentile_ms(50),
            "inference_latency_p99_ms": core.latency.percentile_ms(99),
            "chunks_published": self.chunk_rate.total, "safe_stop_reason": safety.describe(),
            "safe_stop_events": safety.stop_events, "inference_errors": core.inference_errors,
            **self.counts, "features_rejected": core.rejected_features,
            **{f"sensor_{r.value}": n for r, n in core.sensor.counts.items() if r is not PushResult.ACCEPTED},
            "clamped_values": self.output.executor.clamped_values,
            "rate_limited_values": self.output.executor.rate_limited_values,
            "exhausted_chunk_steps": self.output.executor.exhausted_steps, "clock_jumps": core.clock_jumps,
        }
        message = safety.describe()
        if status is not None:  # configured, inactive
            level, message = status
        self.diag_pub.publish(diagnostics(self, level, message, values))


def main(args=None) -> int:
    # Shutdown goes through the lifecycle: an active node deactivates, which sends the final zero.
    return run_node(ActionExpertNode, args, startup_errors=(ModelSpecError, BackendUnavailable))


if __name__ == "__main__":
    raise SystemExit(main())
