"""synthetic_sources: a stand-in robot for tests, benchmarks and demos without hardware or a simulator.

Publishes a camera (`camera/image_raw`, rgb8, moving colour pattern), a 650 Hz IMU or wrench
stream on `sensor`, the `instruction` (latched), and counts of what it sent on /diagnostics.
`camera_enabled` / `sensor_enabled` can be switched live to simulate a dead input. The sensor stream
runs in its own thread with absolute-time pacing, so its rate does not depend on the executor.

With `publish_clock` it is also the time source, as a simulator or `ros2 bag play --clock` is: it
publishes /clock (steady time + `clock_offset`, every `CLOCK_PERIOD`) and stamps everything with it,
and setting `clock_offset` live makes the clock jump (`clock_offset: -10.0` = a bag loop 10 s back).
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import WrenchStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, Imu
from std_msgs.msg import Header, String

from ...core.names import CAMERA_FRAME, IMAGE_TOPIC, SENSOR_FRAME
from ...ros.conversions import rgb_to_image, sec_to_stamp
from ...ros.node_support import LATCHED_QOS, SENSOR_QOS, diagnostics, diagnostics_timer, run_node

CLOCK_PERIOD = 0.004  # s between /clock messages (250 Hz, as sim_node)
CLOCK_EPOCH = 1000.0  # s: sim time starts here, so a 10 s jump back stays positive


class SyntheticSources(Node):
    def __init__(self) -> None:
        super().__init__("synthetic_sources")
        self.declare_parameter("camera_hz", 15.0)
        self.declare_parameter("sensor_hz", 650.0)
        self.declare_parameter("sensor_type", "imu")
        self.declare_parameter("image_size", 224)
        self.declare_parameter("image_topic", IMAGE_TOPIC)
        self.declare_parameter("instruction", "go to the red cylinder")
        self.declare_parameter("camera_enabled", True)
        self.declare_parameter("sensor_enabled", True)
        self.declare_parameter("publish_clock", False)
        self.declare_parameter("clock_offset", 0.0)
        self.sensor_hz = float(self.get_parameter("sensor_hz").value)
        size = int(self.get_parameter("image_size").value)
        self.camera_enabled = bool(self.get_parameter("camera_enabled").value)
        self.sensor_enabled = bool(self.get_parameter("sensor_enabled").value)
        self.publish_clock = bool(self.get_parameter("publish_clock").value)
        self.clock_offset = float(self.get_parameter("clock_offset").value)
        self._clock_start = time.monotonic()
        self.clock_pub = self.create_publisher(Clock, "/clock", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)) if self.publish_clock else None
        yy, xx = np.mgrid[0:size, 0:size]
        self._grid = (xx.astype(np.float32) / size, yy.astype(np.float32) / size)
        self.image_pub = self.create_publisher(Image, str(self.get_parameter("image_topic").value), SENSOR_QOS)
        self.instruction_pub = self.create_publisher(String, "instruction", LATCHED_QOS)
        self.sensor_type = str(self.get_parameter("sensor_type").value)
        sensor_msg = Imu if self.sensor_type == "imu" else WrenchStamped
        self.sensor_pub = self.create_publisher(sensor_msg, "sensor", SENSOR_QOS)
        self.instruction_pub.publish(String(data=str(self.get_parameter("instruction").value)))
        self.create_timer(1.0 / float(self.get_parameter("camera_hz").value), self._publish_image)
        self.add_on_set_parameters_callback(self._on_set)
        self.sensor_sent = 0
        self.images_sent = 0
        # Counts of what was sent, so benchmarks can compare with what the nodes received.
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        diagnostics_timer(self, self._publish_diagnostics)
        self._running = True
        self._thread = threading.Thread(target=self._sensor_loop, name="sensor", daemon=True)
        self._thread.start()

    def _on_set(self, params) -> SetParametersResult:
        for p in params:
            if p.name == "camera_enabled":
                self.camera_enabled = bool(p.value)
            elif p.name == "sensor_enabled":
                self.sensor_enabled = bool(p.value)
            elif p.name == "instruction":
                self.instruction_pub.publish(String(data=str(p.value)))
            elif p.name == "clock_offset":
                self.clock_offset = float(p.value)
        return SetParametersResult(successful=True)

    def _stamp(self):
        """The time of now: our own clock when we publish /clock, else the node's."""
        if self.clock_pub is None:
            return self.get_clock().now().to_msg()
        return sec_to_stamp(CLOCK_EPOCH + time.monotonic() - self._clock_start + self.clock_offset)

    def _publish_image(self) -> None:
        if not self.camera_enabled:
            return
        t = time.monotonic()
        x, y = self._grid
        rgb = np.stack([(np.sin(6 * x + t) + 1) * 127, (np.cos(4 * y - t) + 1) * 127,
                        np.full_like(x, (math.sin(t) + 1) * 127)], axis=-1).astype(np.uint8)
        self.image_pub.publish(rgb_to_image(rgb, self._stamp(), CAMERA_FRAME))
        self.images_sent += 1

    def _publish_diagnostics(self) -> None:
        values = {"sensor_hz": self.sensor_hz, "sensor_sent": self.sensor_sent, "images_sent": self.images_sent,
                  "sensor_enabled": self.sensor_enabled, "camera_enabled": self.camera_enabled,
                  "clock_offset": self.clock_offset}
        self.diag_pub.publish(diagnostics(self, DiagnosticStatus.OK, "publishing", values))

    def _sensor_loop(self) -> None:
        period = 1.0 / self.sensor_hz
        next_time = next_clock = time.monotonic()
        while self._running:
            next_time += period
            delay = next_time - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -0.1:  # fell far behind (machine stalled): resynchronise instead of bursting
                next_time = time.monotonic()
            # The clock ticks here, before the sample it stamps, so no stamp runs ahead of /clock; it
            # keeps ticking while the sensor is disabled (a stalled sensor is not a stopped clock).
            if self.clock_pub is not None and time.monotonic() >= next_clock:
                next_clock = max(next_clock + CLOCK_PERIOD, time.monotonic())
                self.clock_pub.publish(Clock(clock=self._stamp()))
            if self.sensor_enabled:
                self.sensor_pub.publish(self._sensor_message())
                self.sensor_sent += 1

    def _sensor_message(self):
        header = Header(stamp=self._stamp(), frame_id=SENSOR_FRAME)
        t = time.monotonic()
        if self.sensor_type == "imu":
            msg = Imu(header=header)
            msg.angular_velocity.z = 0.1 * math.sin(t)
            msg.linear_acceleration.x = 0.05 * math.cos(3 * t)
            msg.linear_acceleration.z = 9.81
            return msg
        msg = WrenchStamped(header=header)
        msg.wrench.force.z = -20.0 + math.sin(t)
        return msg

    def destroy_node(self) -> None:
        self._running = False
        thread = getattr(self, "_thread", None)  # absent when __init__ failed (a parameter of the wrong type)
        if thread is not None:
            thread.join(timeout=1.0)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(SyntheticSources, args, startup_errors=(InvalidParameterTypeException,))


if __name__ == "__main__":
    raise SystemExit(main())
