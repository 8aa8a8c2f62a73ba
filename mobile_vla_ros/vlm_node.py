"""vlm_node: camera images + instruction -> vision-language features on `vl_features`.

The VLM side (ros/vlm_runner.py) keeps the newest image per camera and runs one forward at a time in
a worker thread at `vlm_hz`; this node publishes each finished forward's features as soon as they are
ready, stamped with the newest source image, and reports on /diagnostics. A managed (lifecycle) node:
see ros/node_support.py `ManagedNode` and the `autostart` parameter.
"""

from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image

from .core.model_spec import ModelSpecError
from .core.names import FEATURES_TOPIC
from .core.params import VLM_NODE_PARAMS
from .core.vlm_schedule import ForwardInputs
from .ros.conversions import features_to_image, sec_to_stamp
from .ros.node_support import (
    LATCHED_QOS,
    ManagedNode,
    diagnostics,
    diagnostics_timer,
    install_live_parameters,
    run_node,
)
from .ros.vlm_runner import VlmRunner
from .vlm.base import VlmLoadError


def publish_features(publisher, features: np.ndarray, inputs: ForwardInputs) -> None:
    """`vl_features`: 32FC1 [tokens, dim], stamped with the newest source image (the features' age)."""
    newest = inputs.newest
    publisher.publish(features_to_image(features, sec_to_stamp(newest.stamp), newest.frame_id))


class VlmNode(ManagedNode):
    """Managed: configure loads the VLM and subscribes (images are kept from then on), activate starts
    the forwards and enables `vl_features`, deactivate stops them (the VLM stays loaded)."""

    def __init__(self) -> None:
        # Before the base class: a parameter error there destroys the node, which calls _release.
        self.vlm: VlmRunner | None = None
        self.features_pub = None
        super().__init__("vlm_node", VLM_NODE_PARAMS, configure_errors=(VlmLoadError, ModelSpecError))
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        diagnostics_timer(self, self._publish_diagnostics)
        install_live_parameters(self, VLM_NODE_PARAMS, self.params, None, self._apply_live)

    def _configure(self) -> None:
        self.features_pub = self.create_lifecycle_publisher(Image, FEATURES_TOPIC, LATCHED_QOS)
        self.vlm = VlmRunner(self, self.params, lambda f, inputs: publish_features(self.features_pub, f, inputs))

    def _activate(self) -> None:
        self.vlm.start()

    def _deactivate(self) -> None:
        self.vlm.stop()

    def _release(self) -> None:
        if self.vlm is not None:
            self.vlm.shutdown()
            self.vlm = None
        if self.features_pub is not None:
            self.destroy_lifecycle_publisher(self.features_pub)
            self.features_pub = None

    def _apply_live(self, changes: dict) -> None:
        if self.vlm is not None:
            self.vlm.apply_live(changes)

    def _publish_diagnostics(self) -> None:
        vlm = self.vlm
        values = {"lifecycle_state": self.lifecycle_state, **({} if vlm is None else vlm.diagnostic_values())}
        status = self.lifecycle_diagnostics()
        if status is None:
            level, message = (DiagnosticStatus.OK if vlm.running else DiagnosticStatus.WARN), vlm.status
            if vlm.counts["forward_errors"] and not vlm.running:
                level = DiagnosticStatus.ERROR
            _, silence = vlm.image_silence()
            if silence:  # a dead camera is the first thing an operator needs to read
                level, message = max(level, DiagnosticStatus.WARN), f"{silence}; {message}"
        else:
            level, message = status
        self.diag_pub.publish(diagnostics(self, level, message, values))

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()


def main(args=None) -> int:
    return run_node(VlmNode, args, startup_errors=(VlmLoadError, ModelSpecError))


if __name__ == "__main__":
    raise SystemExit(main())
