"""sync_baseline_node: the synchronous VLA loop (each decision waits for a fresh forward), the baseline of
`mobile-vla-bench loop --sync` and `bringup --sim --mode sync`. Not for robots.

Every chunk waits for a fresh VLM forward on the newest image: forward -> action expert on the
sensor window ending now -> publish -> next forward at once. It is composed of the VLM node's VLM
side (same extractor, schedule, `simulated_latency`) and the action node's core (same model,
backend and safety gates) and command output, so the two modes differ only in the scheduling.
"""

from __future__ import annotations

import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory

from ...action_expert_node import load_action_core
from ...core.model_spec import ModelSpecError
from ...core.names import CHUNK_TOPIC, FEATURES_TOPIC
from ...core.params import ACTION_NODE_PARAMS, AUTOSTART, VLM_NODE_PARAMS
from ...core.safety import StopReason
from ...core.sensor_window import PushResult
from ...core.stats import RateMeter
from ...core.vlm_schedule import ForwardInputs
from ...ros.command_output import CommandOutput
from ...ros.conversions import SENSOR_MESSAGES, chunk_to_trajectory, stamp_to_sec
from ...ros.node_support import (
    LATCHED_QOS,
    RELIABLE_QOS,
    declare_from_specs,
    diagnostics,
    diagnostics_timer,
    install_live_parameters,
    run_node,
    subscribe_sensor,
)
from ...ros.vlm_runner import VlmRunner
from ...vlm.base import VlmLoadError
from ...vlm_node import publish_features

_VLM_NAMES = {s.name for s in VLM_NODE_PARAMS}
# A plain node (a benchmark baseline, not for robots): it runs from the start, without the lifecycle.
SYNC_BASELINE_PARAMS = tuple(s for s in VLM_NODE_PARAMS if s is not AUTOSTART) + tuple(
    s for s in ACTION_NODE_PARAMS if s.name not in _VLM_NAMES)


class SyncBaselineNode(Node):
    def __init__(self) -> None:
        super().__init__("sync_baseline_node")
        self.params = declare_from_specs(self, SYNC_BASELINE_PARAMS)
        self.core = load_action_core(self.params, self.get_logger().info)
        # The sensor callback (executor thread) and the forward's completion (worker thread) share the core.
        self._core_lock = threading.Lock()
        self.chunk_rate = RateMeter()
        self.sensor_rate = RateMeter()
        self.chunk_pub = self.create_publisher(JointTrajectory, CHUNK_TOPIC, RELIABLE_QOS)
        self.features_pub = self.create_publisher(Image, FEATURES_TOPIC, LATCHED_QOS)
        # Each decision's chunk is executed on cmd_vel like the action node's; after it the robot
        # waits (zero) for the next decision: the synchronous loop's behaviour on a robot.
        self.output = CommandOutput(self, self.core, self.params, self._core_lock)
        self.output.start()
        msg_type, self._to_sample = SENSOR_MESSAGES[self.params["sensor_type"]]
        subscribe_sensor(self, msg_type, self._on_sensor, self.params)
        self.vlm = VlmRunner(self, self.params, self._decide)
        self.vlm.start()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        diagnostics_timer(self, self._publish_diagnostics)
        install_live_parameters(self, SYNC_BASELINE_PARAMS, self.params, None, self.vlm.apply_live)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_sensor(self, msg) -> None:
        with self._core_lock:
            result = self.core.on_sensor(stamp_to_sec(msg.header.stamp), self._to_sample(msg), self._now())
        if result is PushResult.ACCEPTED:
            self.sensor_rate.tick()

    def _decide(self, features: np.ndarray, inputs: ForwardInputs) -> None:
        """In the worker thread: each finished forward drives the action core once."""
        publish_features(self.features_pub, features, inputs)
        instruction, since = self.vlm.instruction()
        with self._core_lock:
            now = self._now()
            self.core.on_instruction(instruction, since)  # the VLM side's arrival time: same instruction identity
            self.core.on_features(features, inputs.newest.stamp, now)
            previous = self.core.safety.reason
            result = self.core.tick(now)
            self.output.on_chunk(result.chunk, was_running=previous is StopReason.NONE)
        if result.chunk is not None:
            self.chunk_pub.publish(chunk_to_trajectory(result.chunk, self.core.spec.action_names))
            self.chunk_rate.tick()

    def _publish_diagnostics(self) -> None:
        level = DiagnosticStatus.OK if self.vlm.running and not self.core.safety.stopped else DiagnosticStatus.WARN
        values = {**self.vlm.diagnostic_values(), "chunk_rate_hz": self.chunk_rate.rate(),
                  "chunks_published": self.chunk_rate.total, "sensor_accepted": self.sensor_rate.total,
                  "safe_stop_reason": self.core.safety.describe()}
        self.diag_pub.publish(diagnostics(self, level, self.vlm.status, values))

    def destroy_node(self) -> None:
        self.vlm.shutdown()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SyncBaselineNode, args, on_shutdown=lambda node: node.output.publish_final_zero()
                    if isinstance(node, SyncBaselineNode) else None, startup_errors=(VlmLoadError, ModelSpecError))


if __name__ == "__main__":
    raise SystemExit(main())
