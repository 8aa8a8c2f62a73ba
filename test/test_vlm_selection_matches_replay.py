"""One recorded stream through vlm_node's VLM side (`VlmRunner`: its image and instruction callbacks,
its tick, its worker with skip-if-busy and catch-up, on a real rclpy node and ROS clock) and through
offline replay (`mobile-vla-eval`'s `replay`): the same forwards on the same images.

The stream has what makes the choice non-trivial: a VLM slower than its period (ticks skipped, the next
forward started when the busy one ends), a camera stall longer than `max_image_age` (ticks with no
usable image), and an instruction change while a forward runs (its features discarded, the first frame
after the change starting a forward at once). Each frame's pixels carry its index, so the real
extractor's inputs say which image a forward used. On the node side the forward is held in the worker
until the ROS clock reaches its start + latency, which is what the replay models."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from mobile_vla_ros.core.backend_factory import create_backend
from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.core.params import VLM_NODE_PARAMS
from mobile_vla_ros.paths import default_model_dir, share_dir
from mobile_vla_ros.tools.bringup.processes import yaml_params
from mobile_vla_ros.tools.evaluation.evaluate import ReplayConfig, replay
from mobile_vla_ros.tools.recordings import Recording
from mobile_vla_ros.vlm.base import ExtractorConfig
from mobile_vla_ros.vlm.factory import create_extractor

pytestmark = pytest.mark.system

VLM_HZ = 3.33
LATENCY = 0.47           # longer than the VLM period: skipped ticks and catch-up (no ties with frame times)
MAX_IMAGE_AGE = 0.3
CAMERA_HZ = 15.0
STALL = (2.0, 2.8)       # no frames: older than max_image_age before it ends
SWITCH = (3.6, "go to the blue box")
END = 6.0
T0 = 100.0               # ROS time of the stream's start


def frame(index: int) -> np.ndarray:
    return np.full((32, 32, 3), index % 251, dtype=np.uint8)


def frame_index(rgb: np.ndarray) -> int:
    return int(rgb[0, 0, 0])


def stream() -> Recording:
    rec = Recording()
    rec.instructions = [(T0 + 0.05, "go to the red cylinder"), (T0 + SWITCH[0], SWITCH[1])]
    times = [k / CAMERA_HZ for k in range(int(END * CAMERA_HZ))]
    rec.images = [(T0 + t, frame(k)) for k, t in enumerate(times) if not STALL[0] <= t < STALL[1]]
    sensor_times = np.arange(0.0, END, 0.01)
    rec.sensor = [(T0 + t, np.array([0, 0, 0, 0, 0, 9.81], np.float32)) for t in sensor_times]
    rec.commands = [(T0 + t, np.zeros(2, np.float32)) for t in np.arange(0.0, END + 1.0, 0.02)]
    rec.executed = list(rec.commands)
    return rec


class Recorded:
    """The real extractor, noting which frames and instruction each forward got."""

    def __init__(self, extract, before=None) -> None:
        self.extract, self.before, self.forwards = extract, before, []

    def __call__(self, images, instruction):
        self.forwards.append((tuple(frame_index(i) for i in images), instruction))
        if self.before is not None:
            self.before()
        return self.extract(images, instruction)


def offline_forwards(rec: Recording, extractor) -> tuple[list, dict]:
    spec = ModelSpec.load(default_model_dir())
    backend = create_backend("onnxruntime", default_model_dir(), spec)
    recorded = Recorded(extractor.extract)
    extractor_view = type("Extractor", (), {"extract": staticmethod(recorded)})
    result = replay(rec, spec, backend, extractor_view, ReplayConfig(VLM_HZ, 10.0, LATENCY, 5.0, 0.5,
                                                                     max_image_age=MAX_IMAGE_AGE), None)
    return recorded.forwards, result["vlm"]


class NodeHarness:
    """VlmRunner on a real node whose ROS clock the test sets; its own timer is cancelled and the test
    ticks at the replay's tick times. A forward blocks in the worker until released at start + latency."""

    def __init__(self, rclpy_module) -> None:
        from rclpy.time import Time

        from mobile_vla_ros.ros.vlm_runner import VlmRunner

        self.rclpy, self.Time = rclpy_module, Time
        self.node = rclpy_module.create_node("vlm_selection_probe")
        self.clock = self.node.get_clock()
        self.clock._set_ros_time_is_active(True)
        self.set_clock(T0 - 1.0)
        # As the node runs on a computer without a GPU (the main job's parameter files), at the stream's rates.
        files = [share_dir() / "config" / name for name in ("robot.yaml", "desktop.yaml")]
        params = {p.name: p.default for p in VLM_NODE_PARAMS} | yaml_params(files, ("vlm_node",)) | {
            "vlm_hz": VLM_HZ, "max_image_age": MAX_IMAGE_AGE, "simulated_latency": 0.0}
        self.features: list[float] = []
        self.runner = VlmRunner(self.node, params, lambda f, inputs: self.features.append(inputs.newest.stamp))
        self.runner.start()
        self.runner._tick_timer.cancel()  # the replay's tick times drive _on_tick instead
        self.spin()  # start()'s immediate tick, before the stream (no input yet: counted, not replayed)
        self.runner.counts["skipped_no_input"] = 0
        self.gate = threading.Semaphore(0)
        self.started: list[float] = []  # ROS time each forward started
        self.recorded = Recorded(self.runner.extractor.extract, before=self._hold)
        self.runner.extractor.extract = self.recorded

    def _hold(self) -> None:
        self.started.append(self.now)
        assert self.gate.acquire(timeout=30), "forward never released"

    @property
    def now(self) -> float:
        return self.clock.now().nanoseconds * 1e-9

    def set_clock(self, t: float) -> None:
        self.clock.set_ros_time_override(self.Time(nanoseconds=int(round(t * 1e9))))

    def spin(self) -> None:
        """Run what the node's executor would run now (the guard condition of a catch-up or first frame)."""
        for _ in range(3):
            self.rclpy.spin_once(self.node, timeout_sec=0.0)

    def wait_started(self, count: int) -> None:
        for _ in range(3000):
            if len(self.started) >= count:
                return
            threading.Event().wait(0.001)
        raise AssertionError("the forward did not start")

    def deliver(self, until: float) -> None:
        """Finish forwards whose modelled latency has passed by `until`, in order."""
        while len(self.started) > self.released and self.started[self.released] + LATENCY <= until:
            ready = self.started[self.released] + LATENCY
            self.set_clock(ready)
            self.released += 1
            self.gate.release()
            assert self.runner.worker.wait_idle(30)
            self.spin()  # catch-up: the tick skipped during the forward starts the next one now
            self.wait_started(self.runner.worker.submitted)

    released = 0

    def run(self, rec: Recording) -> None:
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from mobile_vla_ros.ros.conversions import sec_to_stamp

        start, end = rec.sensor[0][0], min(rec.sensor[-1][0], rec.commands[-1][0])
        period = 1.0 / VLM_HZ
        events = [(t, 0, "instruction", text) for t, text in rec.instructions]
        events += [(t, 1, "image", rgb) for t, rgb in rec.images]
        events += [(start + k * period, 3, "tick", None) for k in range(int((end - start) / period) + 1)]
        events.sort(key=lambda e: (e[0], e[1]))
        for t, _, kind, payload in events:
            self.deliver(t)
            self.set_clock(t)
            if kind == "instruction":
                self.runner._on_instruction(String(data=payload))
            elif kind == "image":
                msg = Image(height=32, width=32, encoding="rgb8", step=96, data=payload.tobytes())
                msg.header.stamp = sec_to_stamp(t)
                msg.header.frame_id = "camera"
                self.runner._on_image("camera/image_raw", msg)
                self.spin()  # the first usable frame after an instruction starts a forward at once
            else:
                self.runner._on_tick()
            self.wait_started(self.runner.worker.submitted)
        self.deliver(float("inf"))

    def close(self) -> None:
        while len(self.started) > self.released:
            self.released += 1
            self.gate.release()
        self.runner.shutdown()
        self.node.destroy_node()


@pytest.fixture(scope="module")
def extractor():
    spec = ModelSpec.load(default_model_dir())
    return create_extractor(ExtractorConfig(backend=spec.vlm_backend, pooling=spec.vlm_pooling,
                                            model_path=str(default_model_dir() / "vlm"), device="cpu", dtype="fp32"))


def test_vlm_node_and_offline_replay_choose_the_same_images(rclpy_session, extractor):
    import rclpy

    rec = stream()
    offline, counts = offline_forwards(rec, extractor)
    harness = NodeHarness(rclpy)
    try:
        harness.run(rec)
        online = harness.recorded.forwards
        skipped_no_input = harness.runner.counts["skipped_no_input"]
        discarded = harness.runner.counts["discarded_old_instruction"]
    finally:
        harness.close()

    assert online == offline
    # The stream exercised what it was built for.
    assert counts["skipped_busy"] > 0 and counts["skipped_no_input"] == skipped_no_input > 0
    assert discarded == 1  # the forward running across the instruction change
    stalled = [i for i in range(int(END * CAMERA_HZ)) if STALL[0] <= i / CAMERA_HZ < STALL[1]]
    assert not {i for frames, _ in offline for i in frames} & set(stalled)
    after_switch = [frames[0] for frames, text in offline if text == SWITCH[1]]
    assert after_switch and min(after_switch) >= round(SWITCH[0] * CAMERA_HZ)  # never a frame older than it
