"""vlm_node: camera images + instruction -> vision-language features on `vl_features`.

The VLM side (ros/vlm_runner.py) keeps the newest image per camera and runs one forward at a time in
a worker thread at `vlm_hz`; this node publishes each finished forward's features as soon as they are
ready, stamped with the newest source image, and reports on /diagnostics.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image

from .core.model_spec import ModelSpecError
from .core.names import FEATURES_TOPIC
from .core.params import VLM_NODE_PARAMS
from .core.vlm_schedule import ForwardInputs
from .ros.conversions import features_to_image, sec_to_stamp
from .ros.node_support import LATCHED_QOS, declare_from_specs, diagnostics, install_live_parameters, run_node
from .ros.vlm_runner import VlmRunner
from .vlm.base import VlmLoadError


def publish_features(publisher, features: np.ndarray, inputs: ForwardInputs) -> None:
    """`vl_features`: 32FC1 [tokens, dim], stamped with the newest source image (the features' age)."""
    newest = inputs.newest
    publisher.publish(features_to_image(features, sec_to_stamp(newest.stamp), newest.frame_id))


class VlmNode(Node):
    def __init__(self) -> None:
        super().__init__("vlm_node")
        self.params = declare_from_specs(self, VLM_NODE_PARAMS)
        self.features_pub = self.create_publisher(Image, FEATURES_TOPIC, LATCHED_QOS)
        self.vlm = VlmRunner(self, self.params, lambda f, inputs: publish_features(self.features_pub, f, inputs))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(1.0, self._publish_diagnostics)
        install_live_parameters(self, VLM_NODE_PARAMS, self.params, None, self.vlm.apply_live)

    def _publish_diagnostics(self) -> None:
        vlm = self.vlm
        level = DiagnosticStatus.OK if vlm.running else DiagnosticStatus.WARN
        if vlm.counts["forward_errors"] and not vlm.running:
            level = DiagnosticStatus.ERROR
        self.diag_pub.publish(diagnostics(self, level, vlm.status, vlm.diagnostic_values()))

    def destroy_node(self) -> None:
        self.vlm.shutdown()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(VlmNode, args, startup_errors=(VlmLoadError, ModelSpecError))


if __name__ == "__main__":
    raise SystemExit(main())
