"""The VLM side of a node: the extractor, its inputs (images per camera, the instruction), the
forward schedule and the worker, shared by vlm_node (which publishes the features) and
sync_baseline_node (whose finished forward drives the action core directly).

Callbacks only store the newest image per camera; a timer at `vlm_hz` hands one forward at a time to
a worker thread (a tick that finds it busy is skipped and counted, and the next forward starts as
soon as the busy one ends), and `on_features(features, inputs)` runs in the worker thread with every
finished forward that is still current (same instruction, same timeline). `start`/`stop` begin and
end the forwards (vlm_node's activate/deactivate); inputs are kept meanwhile, so the first forward
after activate uses the newest image at once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import Image
from std_msgs.msg import String

from ..core.model_spec import ModelSpec, check_params
from ..core.scheduling import SingleFlightWorker, period_from_hz
from ..core.stats import LatencyStats, RateMeter
from ..core.validation import ClockWatch, check_stamp
from ..core.vlm_schedule import CameraFrame, ForwardInputs, VlmScheduler
from ..paths import default_model_dir, resolve_dir
from ..vlm.base import ExtractorConfig
from ..vlm.factory import create_extractor
from .conversions import ConversionError, image_to_rgb, stamp_to_sec
from .node_support import LATCHED_INPUT_QOS, SENSOR_QOS, StartupError, valid_instruction, watch_clock_jumps

# A camera silent this long is named in the diagnostics (cameras publish at >= 5 Hz: 3 s is many
# missed frames, not jitter). A DDS reader can stop receiving while its writer stays matched (README,
# "Restarting a crashed node"): re-creating the subscription did not bring the images back there, a new
# process did, so the node reports it and a supervisor restarts it.
IMAGE_SILENCE = 3.0  # s


class VlmRunner:
    def __init__(self, node: Node, params: dict, on_features: Callable[[np.ndarray, ForwardInputs], None]) -> None:
        self.node, self.params, self.on_features = node, params, on_features
        log = node.get_logger()
        p = params
        model_path = resolve_dir(p["model_path"], default_model_dir() / "vlm")
        start = time.monotonic()
        self.extractor = create_extractor(ExtractorConfig(
            backend=p["vlm_backend"], model_path=str(model_path), clip_model_path=p["clip_model_path"],
            device=p["device"], dtype=p["dtype"], pooling=p["feature_pooling"], compile_mode=p["compile_mode"]))
        compiled = f", compiled ({p['compile_mode']}) on its first forward per shape" if p["compile_mode"] else ""
        log.info(f"{p['vlm_backend']} loaded from {model_path} on {p['device']}/{p['dtype']} "
                 f"in {time.monotonic() - start:.1f} s, feature dim {self.extractor.feature_dim}{compiled}")
        self._check_action_model()

        self.lock = threading.Lock()  # guards the scheduler between executor and worker
        self.schedule = VlmScheduler(p["max_image_age"])
        self.clock_watch = ClockWatch()
        # A guard condition wakes the executor from the worker thread, so a catch-up tick after a
        # forward that outlasted the VLM period runs in the executor like every other tick.
        self._retick = node.create_guard_condition(self._on_tick)
        self.worker = SingleFlightWorker("vlm_forward", on_idle_after_skip=self._retick.trigger)
        self.forward_latency = LatencyStats()
        self.feature_rate = RateMeter()
        self.counts = {"images_rejected": 0, "instructions_rejected": 0, "skipped_no_input": 0,
                       "forward_errors": 0, "discarded_old_instruction": 0, "clock_jumps": 0}
        self.status = "waiting for instruction and images"

        # Steady time of the last image per camera (None: none yet), and since when the runner listens.
        self._last_image: dict[str, float | None] = {topic: None for topic in p["image_topics"]}
        self._listening_since = time.monotonic()
        self._subscriptions = [node.create_subscription(Image, topic, lambda msg, t=topic: self._on_image(t, msg),
                                                        SENSOR_QOS) for topic in p["image_topics"]]
        self._subscriptions.append(node.create_subscription(String, "instruction", self._on_instruction,
                                                            LATCHED_INPUT_QOS))
        self._tick_timer = None  # set while started
        self._jump_handle = watch_clock_jumps(node, lambda jump: self._restart_timeline(self._now()))

    def start(self) -> None:
        if self._tick_timer is None:
            self._tick_timer = self.node.create_timer(period_from_hz(self.params["vlm_hz"]), self._on_tick)
            self._retick.trigger()  # the first forward now, not one period later

    def stop(self) -> None:
        """No new forwards; one in flight finishes (its result is not published while inactive)."""
        if self._tick_timer is not None:
            self.node.destroy_timer(self._tick_timer)
            self._tick_timer = None

    def _check_action_model(self) -> None:
        """The features must be what the action expert was trained on: same backend, pooling and width."""
        p = self.params
        if p["action_model_dir"] == "none":
            self.node.get_logger().warning("action_model_dir is 'none': features are not checked against a "
                                           "model.yaml")
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
        return self.node.get_clock().now().nanoseconds * 1e-9

    def instruction(self) -> tuple[str | None, float]:
        """The current instruction and its arrival time (its identity)."""
        with self.lock:
            return self.schedule.instruction, self.schedule.instruction_since

    def apply_live(self, changes: dict) -> None:
        with self.lock:
            self.schedule.max_image_age = self.params["max_image_age"]
        if "vlm_hz" in changes and self._tick_timer is not None:
            self.node.destroy_timer(self._tick_timer)
            self._tick_timer = self.node.create_timer(period_from_hz(changes["vlm_hz"]), self._on_tick)
            self.node.get_logger().info(f"vlm_hz -> {changes['vlm_hz']}")

    # -- clock jumps ----------------------------------------------------------------------------
    def _read_clock(self) -> float:
        """ROS time now; a jump since the last reading restarts the timeline."""
        now = self._now()
        with self.lock:
            jumped = self.clock_watch.check(now) is not None
        if jumped:
            self._restart_timeline(now)
        return now

    def _restart_timeline(self, now: float) -> None:
        """Frames and a forward in flight are of the old timeline: dropped; the next fresh frame starts one."""
        with self.lock:
            self.schedule.restart_timeline(now)
            self.clock_watch.last = now
        self.counts["clock_jumps"] += 1
        self.node.get_logger().warning("clock jumped: buffered images and the forward in flight dropped",
                                       throttle_duration_sec=1.0)

    # -- inputs ---------------------------------------------------------------------------------
    def image_silence(self) -> tuple[float, str]:
        """Seconds since the last image of the most silent camera (since the runner started, before its
        first), and '' or which cameras have been silent for IMAGE_SILENCE s or more (steady time: a
        stopped or jumping /clock changes nothing)."""
        now = time.monotonic()
        silence = {topic: now - (self._listening_since if last is None else last)
                   for topic, last in self._last_image.items()}
        silent = [f"{topic} for {s:.1f} s" for topic, s in silence.items() if s >= IMAGE_SILENCE]
        return max(silence.values()), ("no image on " + ", ".join(silent) if silent else "")

    def _on_image(self, topic: str, msg: Image) -> None:
        self._last_image[topic] = time.monotonic()
        stamp = stamp_to_sec(msg.header.stamp)
        try:
            reason = check_stamp(stamp, self._read_clock())
            if reason is not None:
                raise ConversionError(reason)
            rgb = image_to_rgb(msg)
        except ConversionError as exc:
            self.counts["images_rejected"] += 1
            self.node.get_logger().warning(f"{topic}: image dropped: {exc}", throttle_duration_sec=5.0)
            return
        frame = CameraFrame(rgb, stamp, msg.header.frame_id)
        with self.lock:
            start_now = self.schedule.add_frame(topic, frame)
        if start_now:  # the first usable frame of a new instruction: no wait for the next tick
            self._retick.trigger()

    def _on_instruction(self, msg: String) -> None:
        text = valid_instruction(self.node, msg, self.params["max_instruction_length"], self.counts)
        if text is None:
            return
        with self.lock:
            changed = self.schedule.set_instruction(text, self._now())
        if changed:
            self.node.get_logger().info(f"instruction: {text!r}")

    # -- forward --------------------------------------------------------------------------------
    def _on_tick(self) -> None:
        if self._tick_timer is None or self.worker.skip_if_busy():  # a retick after stop starts nothing
            return
        now = self._read_clock()
        with self.lock:
            inputs, why = self.schedule.select(now)
        if inputs is None:
            self.counts["skipped_no_input"] += 1
            self.status = why
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
                self.node.get_logger().error(f"VLM forward failed: {error!r}", throttle_duration_sec=5.0)
                return
            with self.lock:
                current = self.schedule.is_current(inputs)
            if not current:
                self.counts["discarded_old_instruction"] += 1
                return
            self.on_features(features, inputs)
            self.feature_rate.tick()
            self.status = "running"

        self.worker.try_submit(forward, done)

    @property
    def running(self) -> bool:
        return self.status == "running" and self.feature_rate.rate() > 0

    def diagnostic_values(self) -> dict:
        return {
            "vlm_backend": self.params["vlm_backend"], "device": self.params["device"],
            "vlm_hz": self.params["vlm_hz"], "feature_rate_hz": self.feature_rate.rate(),
            "forward_latency_p50_ms": self.forward_latency.percentile_ms(50),
            "forward_latency_p99_ms": self.forward_latency.percentile_ms(99),
            "forwards": self.worker.submitted, "features_published": self.feature_rate.total,
            **self.counts, "skipped_busy": self.worker.skipped_busy, "image_silence_s": self.image_silence()[0],
        }

    def shutdown(self) -> None:
        """Stop, wait for a forward in flight, free the subscriptions."""
        self.stop()
        self.worker.shutdown(wait=True)
        for subscription in self._subscriptions:
            self.node.destroy_subscription(subscription)
        self._subscriptions = []
        self.node.destroy_guard_condition(self._retick)
        self._jump_handle = None
