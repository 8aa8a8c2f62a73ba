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

from ..core.model_spec import ModelSpec
from ..core.names import CHUNK_TOPIC, CMD_VEL_TOPIC, FEATURES_TOPIC, IMAGE_TOPIC, SENSOR_TOPIC
from .processes import NodeProcess
from .recordings import Recording, commands_over


def live_replay(rec: Recording, spec: ModelSpec, model_dir: Path, vlm_model_path: str, vlm_hz: float,
                action_hz: float, simulated_latency: float, max_feature_age: float, max_sensor_gap: float,
                instruction: str | None, log_dir: Path | None = None,
                twist_mapping: tuple[str, ...] = ("linear.x", "angular.z"), loops: int = 1) -> dict:
    from geometry_msgs.msg import Twist
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, Imu
    from std_msgs.msg import String
    from trajectory_msgs.msg import JointTrajectory

    from ..ros.conversions import (
        action_to_twist,
        rgb_to_image,
        sample_to_imu,
        sec_to_stamp,
        stamp_to_sec,
        trajectory_to_actions,
    )
    from ..ros.node_support import LATCHED_QOS, SENSOR_QOS
    from .ros_observer import Observer

    observer = Observer("live_replay", own_context=True)
    chunks = observer.record(JointTrajectory, CHUNK_TOPIC, 100,
                             lambda m: (stamp_to_sec(m.header.stamp), trajectory_to_actions(m)))
    features = observer.record(Image, FEATURES_TOPIC, 10, lambda m: stamp_to_sec(m.header.stamp))
    node = observer.node
    clock_pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    image_pub = node.create_publisher(Image, IMAGE_TOPIC, SENSOR_QOS)
    sensor_pub = node.create_publisher(Imu, "sensor", SENSOR_QOS)
    instruction_pub = node.create_publisher(String, "instruction", LATCHED_QOS)
    # The robot's executed commands: the node (execute_chunks false) integrates them into the motion input.
    cmd_pub = node.create_publisher(Twist, CMD_VEL_TOPIC, 10)
    start = rec.sensor[0][0]
    common = {"use_sim_time": True}
    procs = [
        NodeProcess("vlm_node", {**common, "vlm_hz": vlm_hz, "device": "cpu", "dtype": "fp32",
                                 "model_path": vlm_model_path, "action_model_dir": str(model_dir),
                                 "feature_pooling": spec.vlm_pooling, "vlm_backend": spec.vlm_backend,
                                 "simulated_latency": simulated_latency}, log_dir=log_dir),
        NodeProcess("action_expert_node", {**common, "action_hz": action_hz, "model_dir": str(model_dir),
                                           "backend": "onnxruntime", "execute_chunks": False,
                                           "twist_mapping": list(twist_mapping),
                                           "max_feature_age": max_feature_age, "max_sensor_gap": max_sensor_gap},
                    log_dir=log_dir)]
    try:
        # Hold the clock before the bag while the nodes start and discover us.
        deadline = time.monotonic() + 60
        while node.count_subscribers(SENSOR_TOPIC) < 1 or node.count_subscribers(IMAGE_TOPIC) < 1 \
                or node.count_publishers(CHUNK_TOPIC) < 1:
            if time.monotonic() > deadline or not all(p.alive() for p in procs):
                raise RuntimeError("the nodes did not come up:\n" + "\n".join(p.output()[-1500:] for p in procs))
            clock_pub.publish(Clock(clock=sec_to_stamp(start - 1.0)))
            time.sleep(0.1)
        time.sleep(1.0)
        events = [(t, 1, "image", v) for t, v in rec.images] + [(t, 2, "executed", v) for t, v in rec.executed] \
            + [(t, 3, "sensor", v) for t, v in rec.sensor]
        text = instruction if instruction is not None else rec.instructions[0][1]
        events.sort(key=lambda e: (e[0], e[1]))
        passes = []  # (first, last) wall time of each pass
        for _ in range(loops):
            clock_pub.publish(Clock(clock=sec_to_stamp(start - 0.5)))  # from the 2nd pass on: a jump back
            instruction_pub.publish(String(data=text))
            time.sleep(0.5)
            wall0 = time.monotonic()
            for t, _, kind, value in events:
                delay = wall0 + (t - start) - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                stamp = sec_to_stamp(t)
                clock_pub.publish(Clock(clock=stamp))
                if kind == "image":
                    image_pub.publish(rgb_to_image(value, stamp, "camera"))
                elif kind == "executed":
                    cmd_pub.publish(action_to_twist(value, twist_mapping))
                else:
                    sensor_pub.publish(sample_to_imu(value, stamp, "imu"))
            time.sleep(0.5)
            passes.append((wall0, time.monotonic()))
    finally:
        for p in procs:
            p.stop()
        observer.destroy()
    command_times, command_values = rec.command_arrays()
    per_pass = []
    for wall0, wall1 in passes:
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
        per_pass.append(ticks)
    return {"ticks": [t for ticks in per_pass for t in ticks], "passes": per_pass}
