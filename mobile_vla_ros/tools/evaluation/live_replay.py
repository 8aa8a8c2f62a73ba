"""`mobile-vla-eval --live`: replay a bag to the real nodes on sim time, as `ros2 bag play --clock`
would (not installable here): vlm_node and action_expert_node run as processes with
use_sim_time: true; this process publishes /clock and the bag's images, sensor samples and
instruction with their recorded stamps, paced at wall time, and scores every action_chunk the
action node publishes against the recorded actions, exactly as the offline replay scores its ticks.
The VLM latency the offline replay models is produced live by the VLM's real forward plus vlm_node's
`simulated_latency`.

With `loops` > 1 the bag is played that many times back to back and /clock jumps back to its start
each time, as `ros2 bag play --loop` does: the nodes must treat every pass as the first (clock-jump
handling), so each pass is scored on its own. A chunk's feature age is its stamp minus the image
stamp of the newest features published before it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...core.model_spec import ModelSpec
from ...core.names import (
    CAMERA_FRAME,
    CHUNK_TOPIC,
    CMD_VEL_TOPIC,
    FEATURES_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    SENSOR_FRAME,
    SENSOR_TOPIC,
)
from ..bringup.processes import NodeProcess, stop_all
from ..recordings import Recording, commands_over


def live_replay(rec: Recording, spec: ModelSpec, model_dir: Path, vlm_model_path: str, vlm_hz: float,
                action_hz: float, simulated_latency: float, max_feature_age: float, max_sensor_gap: float,
                instruction: str | None, log_dir: Path | None = None,
                twist_mapping: tuple[str, ...] = ("linear.x", "angular.z"), loops: int = 1,
                backend: str = "onnxruntime") -> dict:
    """Play `rec` `loops` times to the two nodes; the chunks of each pass scored (a list per pass).
    The bag's instructions are published at their recorded times (`instruction` replaces them), its
    sensor samples as the model's sensor message type."""
    from sensor_msgs.msg import Image
    from trajectory_msgs.msg import JointTrajectory

    from ...ros.conversions import stamp_to_sec, trajectory_to_actions
    from ..ros_observer import Observer

    observer = Observer("live_replay", own_context=True)
    chunks = observer.record(JointTrajectory, CHUNK_TOPIC, 100,
                             lambda m: (stamp_to_sec(m.header.stamp), trajectory_to_actions(m)))
    features = observer.record(Image, FEATURES_TOPIC, 10, lambda m: stamp_to_sec(m.header.stamp))
    player = _Player(observer.node, spec.sensor_type, twist_mapping)
    procs = _start_nodes(spec, model_dir, vlm_model_path, vlm_hz, action_hz, simulated_latency, max_feature_age,
                         max_sensor_gap, twist_mapping, backend, log_dir)
    try:
        player.wait_for(procs, rec.sensor[0][0] - 1.0)
        texts = [(rec.sensor[0][0] - 0.5, instruction)] if instruction is not None else rec.instructions
        passes = [player.play(rec, texts) for _ in range(loops)]
    finally:
        stop_all(procs)
        observer.destroy()
    per_pass = [_score(rec, spec, chunks, features, wall0, wall1) for wall0, wall1 in passes]
    return {"ticks": [t for ticks in per_pass for t in ticks], "passes": per_pass}


def _start_nodes(spec: ModelSpec, model_dir: Path, vlm_model_path: str, vlm_hz: float, action_hz: float,
                 simulated_latency: float, max_feature_age: float, max_sensor_gap: float,
                 twist_mapping: tuple[str, ...], backend: str, log_dir: Path | None) -> list[NodeProcess]:
    common = {"use_sim_time": True}
    return [
        NodeProcess("vlm_node", {**common, "vlm_hz": vlm_hz, "device": "cpu", "dtype": "fp32",
                                 "model_path": vlm_model_path, "action_model_dir": str(model_dir),
                                 "feature_pooling": spec.vlm_pooling, "vlm_backend": spec.vlm_backend,
                                 "simulated_latency": simulated_latency}, log_dir=log_dir),
        # execute_chunks false: the node integrates the bag's executed commands into the motion input.
        NodeProcess("action_expert_node", {**common, "action_hz": action_hz, "model_dir": str(model_dir),
                                           "backend": backend, "execute_chunks": False,
                                           "sensor_type": spec.sensor_type, "twist_mapping": list(twist_mapping),
                                           "max_feature_age": max_feature_age, "max_sensor_gap": max_sensor_gap},
                    log_dir=log_dir)]


class _Player:
    """Publishes /clock and a recording's messages at wall-clock pace, as `ros2 bag play --clock`."""

    def __init__(self, node, sensor_type: str, twist_mapping: tuple[str, ...]) -> None:
        from geometry_msgs.msg import Twist
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from ...ros.conversions import SENSOR_MESSAGES
        from ...ros.node_support import LATCHED_QOS, SENSOR_QOS

        self.node, self.sensor_type, self.twist_mapping = node, sensor_type, twist_mapping
        self.Clock, self.String = Clock, String
        self.clock = node.create_publisher(Clock, "/clock",
                                           QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
        self.image = node.create_publisher(Image, IMAGE_TOPIC, SENSOR_QOS)
        self.sensor = node.create_publisher(SENSOR_MESSAGES[sensor_type][0], SENSOR_TOPIC, SENSOR_QOS)
        self.instruction = node.create_publisher(String, INSTRUCTION_TOPIC, LATCHED_QOS)
        self.cmd_vel = node.create_publisher(Twist, CMD_VEL_TOPIC, 10)

    def publish_clock(self, t: float) -> None:
        from ...ros.conversions import sec_to_stamp

        self.clock.publish(self.Clock(clock=sec_to_stamp(t)))

    def wait_for(self, procs: list[NodeProcess], hold_at: float, timeout: float = 60.0) -> None:
        """Hold the clock before the bag while the nodes start and discover this node."""
        deadline = time.monotonic() + timeout
        while self.node.count_subscribers(SENSOR_TOPIC) < 1 or self.node.count_subscribers(IMAGE_TOPIC) < 1 \
                or self.node.count_publishers(CHUNK_TOPIC) < 1:
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError("the nodes did not come up:\n" + "\n".join(p.output()[-1500:] for p in procs))
            self.publish_clock(hold_at)
            time.sleep(0.1)
        time.sleep(1.0)

    def play(self, rec: Recording, instructions: list[tuple[float, str]]) -> tuple[float, float]:
        """One pass; /clock starts just before the bag (from the second pass on: a jump back).
        Returns the pass's first and last wall time."""
        from ...ros.conversions import action_to_twist, rgb_to_image, sample_to_message, sec_to_stamp

        start = rec.sensor[0][0]
        events = [(t, 0, "instruction", v) for t, v in instructions] + [(t, 1, "image", v) for t, v in rec.images] \
            + [(t, 2, "executed", v) for t, v in rec.executed] + [(t, 3, "sensor", v) for t, v in rec.sensor]
        events.sort(key=lambda e: (e[0], e[1]))
        self.publish_clock(start - 0.5)
        time.sleep(0.5)
        wall0 = time.monotonic()
        for t, _, kind, value in events:
            delay = wall0 + (t - start) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            stamp = sec_to_stamp(max(t, start - 0.5))  # an instruction recorded before the first sample
            self.clock.publish(self.Clock(clock=stamp))
            if kind == "instruction":
                self.instruction.publish(self.String(data=value))
            elif kind == "image":
                self.image.publish(rgb_to_image(value, stamp, CAMERA_FRAME))
            elif kind == "executed":
                self.cmd_vel.publish(action_to_twist(value, self.twist_mapping))
            else:
                self.sensor.publish(sample_to_message(self.sensor_type, value, stamp, SENSOR_FRAME))
        time.sleep(0.5)
        return wall0, time.monotonic()


def _score(rec: Recording, spec: ModelSpec, chunks, features, wall0: float, wall1: float) -> list[dict]:
    """The chunks that arrived during one pass, against the recorded commands over their span."""
    command_times, command_values = rec.command_arrays()
    ticks = []
    for arrival, (t, actions) in chunks.since(wall0):
        if arrival > wall1:
            break
        target, covered = commands_over(command_times, command_values, np.array([t]), spec.chunk_size,
                                        spec.action_dt)
        if not covered[0]:
            continue
        shown = [stamp for a, stamp in features.since(wall0) if a <= arrival]
        ticks.append({"t": t, "pred": actions, "target": target[0],
                      "feature_age": t - shown[-1] if shown else float("nan")})
    return ticks
