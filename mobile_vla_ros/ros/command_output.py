"""Chunks executed on `cmd_vel`, shared by action_expert_node and sync_baseline_node.

Every `execute_hz` tick checks the core's input gates (so a stop takes effect within one execute
period, not one decision period) and publishes the newest chunk's step for now (ChunkExecutor: limits
last), or, while the core is stopped, zero for `zero_cmd_hold` seconds and then nothing. The command executed
is reported back to the core, whose motion history integrates it (the motion since the image).
`start` begins the ticks and `stop` ends them with a zero command (a managed node's activate and
deactivate); on a lifecycle node `cmd_vel` is a lifecycle publisher, silent while inactive.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.duration import Duration
from rclpy.node import Node

from ..core.action_pipeline import ActionExpertCore
from ..core.chunk_executor import ActionChunk, ChunkExecutor
from ..core.names import BASE_FRAME, CMD_VEL_TOPIC
from ..core.scheduling import period_from_hz
from .conversions import action_to_twist, stamped, twist_to_action

CMD_VEL_FRAME = BASE_FRAME
FINAL_ZERO_ACK_TIMEOUT = Duration(seconds=0.5)  # a live subscription acknowledges within milliseconds


class CommandOutput:
    def __init__(self, node: Node, core: ActionExpertCore, params: dict, core_lock=None) -> None:
        """`core_lock`: held around every use of the core, where another thread uses it too."""
        self.node, self.core, self.params = node, core, params
        self._core_lock = core_lock or contextlib.nullcontext()
        dim = core.spec.action_dim
        self.executor = ChunkExecutor(dim, params["action_limits"], params["max_action_step"])
        self._stopped_since = time.monotonic()
        self._zero = np.zeros(dim, dtype=np.float32)
        twist_type = TwistStamped if params["twist_stamped"] else Twist
        self.publisher = self._subscription = self._timer = None
        if params["execute_chunks"]:
            create = getattr(node, "create_lifecycle_publisher", node.create_publisher)
            self.publisher = create(twist_type, CMD_VEL_TOPIC, 10)
        elif core.spec.motion_input:
            # Something else executes the chunks: its cmd_vel is the motion the model must be told about.
            self._subscription = node.create_subscription(twist_type, CMD_VEL_TOPIC, self._on_external_cmd_vel, 10)

    def start(self) -> None:
        """Execute chunks from now on, starting from zero (the rate limiter ramps up from rest)."""
        self.on_chunk(None, was_running=True)
        if self.publisher is not None and self._timer is None:
            self._timer = self.node.create_timer(period_from_hz(self.params["execute_hz"]), self._on_tick)

    def stop(self) -> None:
        """No more ticks; a zero command now, so the robot does not keep the last velocity."""
        if self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = None
        self.on_chunk(None, was_running=True)
        self.publish_final_zero()

    def close(self) -> None:
        """Stop and free the publisher/subscription (a managed node's cleanup)."""
        self.stop()
        if self.publisher is not None:
            destroy = getattr(self.node, "destroy_lifecycle_publisher", self.node.destroy_publisher)
            destroy(self.publisher)
            self.publisher = None
        if self._subscription is not None:
            self.node.destroy_subscription(self._subscription)
            self._subscription = None

    def apply_live(self, changes: dict) -> None:
        p = self.params
        self.executor.set_limits(p["action_limits"], p["max_action_step"])
        if "execute_hz" in changes and self._timer is not None:
            self.node.destroy_timer(self._timer)
            self._timer = self.node.create_timer(period_from_hz(p["execute_hz"]), self._on_tick)

    def on_chunk(self, chunk: ActionChunk | None, was_running: bool) -> None:
        """After each decision: the new chunk, or None when the core stopped (immediate zero)."""
        if chunk is None:
            if was_running:
                self._stopped_since = time.monotonic()
            self.executor.reset_to_zero()
            return
        self.executor.set_chunk(chunk)

    def _on_tick(self) -> None:
        now = self.node.get_clock().now().nanoseconds * 1e-9
        with self._core_lock:
            if not self.core.safety.stopped and self.core.check_inputs(now) is not None:
                # The inputs went bad between two decisions: stop at this rate, not the decisions'.
                self.node.get_logger().warning(f"safe stop: {self.core.safety.describe()}")
                self.on_chunk(None, was_running=True)
            stopped = self.core.safety.stopped
            command = self._zero if stopped else self.executor.command(now)
            self.core.on_executed(command)
        if not stopped:
            self.publish(command)
        elif time.monotonic() - self._stopped_since <= self.params["zero_cmd_hold"]:
            self.publish(self._zero)

    def _on_external_cmd_vel(self, msg) -> None:
        twist = msg.twist if isinstance(msg, TwistStamped) else msg
        with self._core_lock:
            self.core.on_executed(twist_to_action(twist, self.params["twist_mapping"]))

    def publish(self, values: np.ndarray) -> None:
        twist = action_to_twist(values, self.params["twist_mapping"])
        if self.params["twist_stamped"]:
            self.publisher.publish(stamped(twist, self.node.get_clock().now().to_msg(), CMD_VEL_FRAME))
        else:
            self.publisher.publish(twist)

    def publish_zero(self) -> None:
        """A zero command now (a clock jump; `stop`): the robot must not keep the last velocity."""
        if self.publisher is not None:
            self.publish(self._zero)

    def publish_final_zero(self) -> None:
        """A zero command, and wait until the base's subscriptions have it: at deactivation or shutdown
        the publisher (or the process) goes next, and a reliable sample still in flight then is lost."""
        self.publish_zero()
        if self.publisher is not None and not self.publisher.wait_for_all_acked(FINAL_ZERO_ACK_TIMEOUT):
            self.node.get_logger().warning(
                f"the final zero cmd_vel was not acknowledged by every subscription within "
                f"{FINAL_ZERO_ACK_TIMEOUT.nanoseconds / 1e9:.1f} s")
