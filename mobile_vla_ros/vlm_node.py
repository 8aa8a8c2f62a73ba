"""vlm_node: camera images + instruction -> vision-language features on `vl_features`.

Callbacks only store the newest image per camera; a timer at `vlm_hz` hands one forward at a
time to a worker thread (a tick that finds it busy is skipped and counted), and the worker
publishes the features as soon as they are ready, stamped with the newest source image.
"""

from __future__ import annotations

import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from .core.model_spec import ModelSpec, ModelSpecError, check_params
from .core.params import VLM_NODE_PARAMS, ParamSpec
from .core.scheduling import SingleFlightWorker, period_from_hz
from .core.stats import LatencyStats, RateMeter
from .core.validation import ClockWatch, check_stamp
from .core.vlm_schedule import CameraFrame, ForwardInputs, VlmScheduler
from .paths import default_model_dir, resolve_dir
from .ros.conversions import ConversionError, features_to_image, image_to_rgb, sec_to_stamp, stamp_to_sec
from .ros.node_support import (
    LATCHED_INPUT_QOS,
    LATCHED_QOS,
    SENSOR_QOS,
    StartupError,
    declare_from_specs,
    diagnostics,
    install_live_parameters,
    run_node,
    valid_instruction,
    watch_clock_jumps,
)
from .vlm.base import ExtractorConfig, VlmLoadError, create_extractor


class VlmNode(Node):
    def __init__(self, node_name: str = "vlm_node", param_specs: tuple[ParamSpec, ...] = VLM_NODE_PARAMS) -> None:
        super().__init__(node_name)
        self.params = declare_from_specs(self, param_specs)
        p = self.params
        model_path = resolve_dir(p["model_path"], default_model_dir() / "vlm")
        start = time.monotonic()
        self.extractor = create_extractor(ExtractorConfig(
            backend=p["vlm_backend"], model_path=str(model_path), clip_model_path=p["clip_model_path"],
            device=p["device"], dtype=p["dtype"], pooling=p["feature_pooling"]))
        self.get_logger().info(f"{p['vlm_backend']} loaded from {model_path} on {p['device']}/{p['dtype']} "
                               f"in {time.monotonic() - start:.1f} s, feature dim {self.extractor.feature_dim}")
        self._check_action_model()

        self._lock = threading.Lock()  # guards the scheduler between executor and worker
        self.schedule = VlmScheduler(p["max_image_age"])
        self.clock_watch = ClockWatch()
        # A guard condition wakes the executor from the worker thread, so a catch-up tick after a
        # forward that outlasted the VLM period runs in the executor like every other tick.
        self._retick = self.create_guard_condition(self._on_tick)
        self.worker = SingleFlightWorker("vlm_forward", on_idle_after_skip=self._retick.trigger)
        self.forward_latency = LatencyStats()
        self.feature_rate = RateMeter()
        self.counts = {"images_rejected": 0, "instructions_rejected": 0, "skipped_no_input": 0,
                       "forward_errors": 0, "discarded_old_instruction": 0, "clock_jumps": 0}
        self._last_status = "waiting for instruction and images"

        self.features_pub = self.create_publisher(Image, "vl_features", LATCHED_QOS)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        for topic in p["image_topics"]:
            self.create_subscription(Image, topic, lambda msg, t=topic: self._on_image(t, msg), SENSOR_QOS)
        self.create_subscription(String, "instruction", self._on_instruction, LATCHED_INPUT_QOS)
        self._tick_timer = self.create_timer(period_from_hz(p["vlm_hz"]), self._on_tick)
        self.create_timer(1.0, self._publish_diagnostics)
        self._jump_handle = watch_clock_jumps(self, lambda jump: self._restart_timeline(self._now()))
        install_live_parameters(self, param_specs, self.params, None, self._apply_live)

    def _check_action_model(self) -> None:
        """The features must be what the action expert was trained on: same backend, pooling and width."""
        p = self.params
        if p["action_model_dir"] == "none":
            self.get_logger().warning("action_model_dir is 'none': features are not checked against a model.yaml")
            return
        model_dir = resolve_dir(p["action_model_dir"], default_model_dir())
        spec = ModelSpec.load(model_dir)
        problems = [f"{x} ({model_dir})" for x in check_params(spec, p)]
        if spec.feature_dim != self.extractor.feature_dim:
            problems.append(f"feature dim: expected {spec.feature_dim} (model.yaml of {model_dir}), got "
                            f"{self.extractor.feature_dim} ({p['vlm_backend']} at {p['model_path'] or 'default'})")
        if problems:
            raise StartupError("VL features would not fit the action expert: " + "; ".join(problems))

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _apply_live(self, changes: dict) -> None:
        with self._lock:
            self.schedule.max_image_age = self.params["max_image_age"]
        if "vlm_hz" in changes:
            self.destroy_timer(self._tick_timer)
            self._tick_timer = self.create_timer(period_from_hz(changes["vlm_hz"]), self._on_tick)
            self.get_logger().info(f"vlm_hz -> {changes['vlm_hz']}")

    # -- clock jumps ----------------------------------------------------------------------------
    def _read_clock(self) -> float:
        """ROS time now; a jump since the last reading restarts the timeline."""
        now = self._now()
        with self._lock:
            jumped = self.clock_watch.check(now) is not None
        if jumped:
            self._restart_timeline(now)
        return now

    def _restart_timeline(self, now: float) -> None:
        """Frames and a forward in flight are of the old timeline: dropped; the next fresh frame starts one."""
        with self._lock:
            self.schedule.restart_timeline(now)
            self.clock_watch.last = now
        self.counts["clock_jumps"] += 1
        self.get_logger().warning("clock jumped: buffered images and the forward in flight dropped",
                                  throttle_duration_sec=1.0)

    # -- inputs ---------------------------------------------------------------------------------
    def _on_image(self, topic: str, msg: Image) -> None:
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            reason = check_stamp(stamp, self._read_clock())
            if reason is not None:
                raise ConversionError(reason)
            rgb = image_to_rgb(msg)
        except ConversionError as exc:
            self.counts["images_rejected"] += 1
            self.get_logger().warning(f"{topic}: image dropped: {exc}", throttle_duration_sec=5.0)
            return
        frame = CameraFrame(rgb, stamp, msg.header.frame_id)
        with self._lock:
            start_now = self.schedule.add_frame(topic, frame)
        if start_now:  # the first usable frame of a new instruction: no wait for the next tick
            self._retick.trigger()

    def _on_instruction(self, msg: String) -> None:
        text = valid_instruction(self, msg, self.params["max_instruction_length"], self.counts)
        if text is None:
            return
        with self._lock:
            changed = self.schedule.set_instruction(text, self._now())
        if changed:
            self.get_logger().info(f"instruction: {text!r}")

    # -- forward --------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        if self.worker.skip_if_busy():
            return
        now = self._read_clock()
        with self._lock:
            inputs, why = self.schedule.select(now)
        if inputs is None:
            self.counts["skipped_no_input"] += 1
            self._last_status = why
            return
        simulated = self.params["simulated_latency"]

        def forward() -> np.ndarray:
            start = time.monotonic()
            features = self.extractor.extract([f.rgb for f in inputs.frames], inputs.instruction)
            if simulated > 0:
                time.sleep(max(0.0, simulated - (time.monotonic() - start)))
            self.forward_latency.add(time.monotonic() - start)
            return features

        def done(features: np.ndarray | None, error: BaseException | None) -> None:
            if error is not None:
                self.counts["forward_errors"] += 1
                self.get_logger().error(f"VLM forward failed: {error!r}", throttle_duration_sec=5.0)
                return
            with self._lock:
                current = self.schedule.is_current(inputs)
            if not current:
                self.counts["discarded_old_instruction"] += 1
                return
            self._on_features_ready(features, inputs)
            self._last_status = "running"

        self.worker.try_submit(forward, done)

    def _on_features_ready(self, features: np.ndarray, inputs: ForwardInputs) -> None:
        """Called in the worker thread with the features of a finished forward."""
        newest = inputs.newest
        self.features_pub.publish(features_to_image(features, sec_to_stamp(newest.stamp), newest.frame_id))
        self.feature_rate.tick()

    def _publish_diagnostics(self) -> None:
        running = self._last_status == "running" and self.feature_rate.rate() > 0
        level = DiagnosticStatus.OK if running else DiagnosticStatus.WARN
        if self.counts["forward_errors"] and not running:
            level = DiagnosticStatus.ERROR
        self.diag_pub.publish(diagnostics(self, level, self._last_status, self._diagnostic_values()))

    def _diagnostic_values(self) -> dict:
        return {
            "vlm_backend": self.params["vlm_backend"], "device": self.params["device"],
            "vlm_hz": self.params["vlm_hz"], "feature_rate_hz": self.feature_rate.rate(),
            "forward_latency_p50_ms": self.forward_latency.percentile_ms(50),
            "forward_latency_p99_ms": self.forward_latency.percentile_ms(99),
            "forwards": self.worker.submitted, "features_published": self.feature_rate.total,
            **self.counts, "skipped_busy": self.worker.skipped_busy,
        }

    def destroy_node(self) -> None:
        self.worker.shutdown(wait=True)
        super().destroy_node()


def main(args=None) -> int:
    return run_node(VlmNode, args, startup_errors=(VlmLoadError, ModelSpecError))


if __name__ == "__main__":
    raise SystemExit(main())
