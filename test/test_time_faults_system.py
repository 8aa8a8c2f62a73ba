"""Clock jumps through the real nodes on sim time: `synthetic_sources` is the time source (/clock) and
jumps it 10 s back, then 10 s forward, while vlm_node and action_expert_node run on use_sim_time
(started first: until /clock comes they say so on /diagnostics).

Checked from outside: no action_chunk whose sensor window lies outside what the clock allowed when the
node published it (ahead of it, or older than max_sensor_gap; both read from the publication times the
middleware gives, so the probe's own lag cannot fail a fresh chunk), no chunk built on features of the old
timeline, zero cmd_vel within one action period of the jump and nothing else until chunks resume, and
chunks back within (window fill + one VLM period + 0.5 s)."""

from __future__ import annotations

import time

import pytest
from geometry_msgs.msg import Twist
from rclpy.qos import QoSProfile, ReliabilityPolicy
from ros_harness import NodeProcess, diag_values, wait_for
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory

from mobile_vla_ros.ros.conversions import stamp_to_sec
from mobile_vla_ros.tools.bench.soak import ClockTracker, chunks_off_the_clock

pytestmark = pytest.mark.system

SENSOR_HZ, WINDOW = 650.0, 65
VLM_HZ = 3.0
ACTION_PERIOD = 0.1
MAX_SENSOR_GAP = 0.05
MAX_FEATURE_AGE = 1.5
JUMP = 10.0
RESUME_BOUND = WINDOW / SENSOR_HZ + 1.0 / VLM_HZ + 0.5
DELIVERY = 0.02  # the probe and the node receive the same /clock message a few ms apart


def jump_and_check(probe, clocks, chunks, twists, features, offset: float) -> dict:
    """Set the source's clock offset, find the jump in the /clock stream, and check the rules."""
    before = clocks.since(0.0)[-1][1]
    t_set = time.monotonic()
    assert probe.set_param("synthetic_sources", "clock_offset", offset).successful
    wait_for(lambda: any(abs(v - before) > JUMP / 2 for _, v in clocks.since(t_set)), 5, "the jump on /clock")
    t_jump, new_clock = next((t, v) for t, v in clocks.since(t_set) if abs(v - before) > JUMP / 2)
    wait_for(lambda: len(chunks.since(t_jump)) >= 10, 15, "chunks to resume after the jump")
    clock = ClockTracker()  # the sim time when a message was published, as the soak benchmark reads it
    for published, sec in clocks.published_since(t_jump - 1.0):
        clock.add(published, sec)

    # A chunk the node sent just before it saw the jump may reach the probe after the probe saw it (the
    # probe's one thread takes /clock and action_chunk in its own order, and lags on a loaded machine):
    # at most one, within an action period, stamped on the old timeline no later than the old clock. A
    # node that went on with the old timeline would send one every action period.
    old_clock = [v for t, v in clocks.since(0.0) if t < t_jump][-1]  # the last one before the jump
    after = chunks.since(t_jump + DELIVERY)
    in_flight = [(arrival, stamp) for arrival, stamp in after if abs(stamp - new_clock) > JUMP / 2]
    assert len(in_flight) <= 1 and all(arrival - t_jump <= ACTION_PERIOD and stamp <= old_clock + DELIVERY
                                       for arrival, stamp in in_flight), \
        f"chunks of the old timeline after the jump: {in_flight} (jump at {t_jump:.3f}, old clock {old_clock:.3f})"
    after = [chunk for chunk in after if chunk not in in_flight]

    # Nothing else from the wrong timeline: every chunk's window ends within [clock - gap, clock] when it
    # was published, and every chunk follows features of the new timeline.
    sent = [(published, stamp) for published, stamp in chunks.published_since(t_jump + DELIVERY)
            if abs(stamp - new_clock) <= JUMP / 2]
    off_the_clock = chunks_off_the_clock(clock, sent, MAX_SENSOR_GAP)
    assert not off_the_clock, "chunks outside the clock's window: " + ", ".join(
        f"stamped {stamp:.3f} with the clock at {clock.sim_at(published):.3f}" for published, stamp in off_the_clock) \
        + f" (jump to {new_clock:.3f})"
    first_new_features = next(t for t, stamp in features.since(t_jump) if stamp >= new_clock - 0.5)
    assert all(arrival >= first_new_features - DELIVERY for arrival, _ in after), \
        "a chunk before any features of the new timeline"

    # Zero within one action period; only zeros until the first chunk of the new timeline.
    first_chunk = after[0][0]
    zero_times = [t for t, m in twists.since(t_jump - DELIVERY) if m.linear.x == 0.0 and m.angular.z == 0.0]
    assert zero_times, "no zero cmd_vel after the jump"
    time_to_zero = zero_times[0] - t_jump
    assert time_to_zero <= ACTION_PERIOD, f"zero cmd_vel {time_to_zero:.3f} s after the jump"
    moving = [t for t, m in twists.since(zero_times[0]) if t < first_chunk - DELIVERY
              and (m.linear.x != 0.0 or m.angular.z != 0.0)]
    assert not moving, f"non-zero cmd_vel {moving[0] - t_jump:.3f} s after the jump, before chunks resumed"
    time_to_resume = first_chunk - t_jump
    assert time_to_resume <= RESUME_BOUND, f"chunks resumed {time_to_resume:.2f} s after the jump"
    return {"time_to_zero": time_to_zero, "time_to_resume": time_to_resume}


@pytest.mark.timeout(180)
def test_clock_jumps_back_and_forward_stop_then_resume_on_the_new_timeline(probe, processes):
    best_effort = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
    clocks = probe.record(Clock, "/clock", best_effort, lambda m: stamp_to_sec(m.clock), publish_times=True)
    chunks = probe.record(JointTrajectory, "action_chunk", 10, lambda m: stamp_to_sec(m.header.stamp),
                          publish_times=True)
    twists = probe.record(Twist, "cmd_vel", 100)
    features = probe.record(Image, "vl_features", transform=lambda m: stamp_to_sec(m.header.stamp))
    diags = probe.diagnostics()
    sim = {"use_sim_time": True}
    processes.append(NodeProcess("vlm_node", {**sim, "device": "cpu", "dtype": "fp32", "vlm_hz": VLM_HZ}))
    processes.append(NodeProcess("action_expert_node", {**sim, "max_sensor_gap": MAX_SENSOR_GAP,
                                                        "max_feature_age": MAX_FEATURE_AGE}))
    # Before any /clock their ROS-time timers cannot fire; /diagnostics (steady time) says why.
    for node in ("vlm_node", "action_expert_node"):
        wait_for(lambda node=node: "waiting for /clock" in diag_values(diags, node).get("_message", ""), 60,
                 f"{node} reporting that it waits for /clock")
    processes.append(NodeProcess("tools.bringup.synthetic_sources", {"publish_clock": True, "sensor_hz": SENSOR_HZ}))
    # The probe can discover the clock's publisher a second or two after the nodes did.
    wait_for(lambda: chunks.count() >= 10 and clocks.count() > 0, 60, "chunks and /clock before the jumps")

    back = jump_and_check(probe, clocks, chunks, twists, features, -JUMP)
    forward = jump_and_check(probe, clocks, chunks, twists, features, 0.0)
    print(f"backward: zero after {back['time_to_zero'] * 1e3:.0f} ms, resumed after {back['time_to_resume']:.2f} s; "
          f"forward: {forward['time_to_zero'] * 1e3:.0f} ms, {forward['time_to_resume']:.2f} s")
    # Exactly the two jumps: the sim clock starting (0 -> first /clock) is not one.
    for node in ("action_expert_node", "vlm_node"):
        wait_for(lambda node=node: diag_values(diags, node).get("clock_jumps") == "2", 5,
                 f"two clock jumps in {node}'s diagnostics (got {diag_values(diags, node).get('clock_jumps')})")
    assert all(p.alive() for p in processes)
