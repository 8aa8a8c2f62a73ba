"""Faults with real processes: SIGTERM sends a final zero cmd_vel, a killed VLM node stops the robot and
a restarted one resumes it, and a flood of malformed messages is dropped and counted while valid
traffic keeps producing chunks at 10 Hz."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from ros_harness import NodeProcess, diag_values, diagnostics_of, wait_for
from sensor_msgs.msg import Image, Imu
from std_msgs.msg import Header, String
from trajectory_msgs.msg import JointTrajectory

from mobile_vla_ros.core.sensor_window import PushResult
from mobile_vla_ros.ros.conversions import sec_to_stamp
from mobile_vla_ros.ros.node_support import LATCHED_QOS, SENSOR_QOS

pytestmark = pytest.mark.system

VLM = {"device": "cpu", "dtype": "fp32", "vlm_hz": 3.0}


@pytest.mark.timeout(120)
def test_sigterm_publishes_a_final_zero_command(probe, processes):
    chunks = probe.record(JointTrajectory, "action_chunk", 10)
    twists = probe.record(Twist, "cmd_vel", 10)
    processes.append(NodeProcess("tools.bringup.synthetic_sources", {}))
    processes.append(NodeProcess("vlm_node", VLM))
    action = NodeProcess("action_expert_node", {"max_action_step": [10.0, 10.0]})
    processes.append(action)
    wait_for(lambda: chunks.count() >= 10, 60, "chunks")
    moving = [m for _, m in twists.since(0.0) if m.linear.x != 0.0 or m.angular.z != 0.0]
    assert moving, "the robot must be commanded to move before the test means anything"
    t_term = time.monotonic()
    code = action.stop(signal.SIGTERM)
    assert code == 0, f"exit code {code}:\n{action.output()[-3000:]}"
    # The process is gone: whatever it published is in flight or here; wait for it, then the last one.
    wait_for(lambda: any(m.linear.x == 0.0 and m.angular.z == 0.0 for _, m in twists.since(t_term)), 5,
             "a zero cmd_vel after SIGTERM")
    last = twists.since(t_term)[-1][1]
    assert last.linear.x == 0.0 and last.angular.z == 0.0, "the last command before exit must be zero"


@pytest.mark.timeout(180)
def test_killed_vlm_node_stops_the_robot_and_a_restart_resumes(probe, processes):
    chunks = probe.record(JointTrajectory, "action_chunk", 10)
    twists = probe.record(Twist, "cmd_vel", 10)
    processes.append(NodeProcess("tools.bringup.synthetic_sources", {}))
    vlm = NodeProcess("vlm_node", VLM)
    processes.append(vlm)
    processes.append(NodeProcess("action_expert_node", {"max_feature_age": 1.0}))
    wait_for(lambda: chunks.count() >= 10, 60, "chunks")
    vlm.stop(signal.SIGKILL)
    t_kill = time.monotonic()
    time.sleep(2.5)
    last_chunk = max(t for t, _ in chunks.since(0.0))
    # features are at most 1/vlm_hz old at the kill: stop within max_feature_age + one action period
    assert last_chunk - t_kill <= 1.0 + 0.1 + 0.3, f"chunks for {last_chunk - t_kill:.2f} s after the kill"
    zeros = twists.since(last_chunk + 0.2)
    assert zeros and all(m.linear.x == 0.0 and m.angular.z == 0.0 for _, m in zeros)

    processes.append(NodeProcess("vlm_node", VLM))  # restart: no manual step on the action node
    t_restart = time.monotonic()
    wait_for(lambda: len(chunks.since(t_restart)) >= 10, 60, "chunks after the VLM restart")


def _stamp_at(probe, offset: float = 0.0) -> Time:
    return sec_to_stamp(probe.node.get_clock().now().nanoseconds * 1e-9 + offset)


def _malformed_images(probe):
    ok = {"height": 8, "width": 8, "step": 24, "data": bytes(192), "encoding": "rgb8"}
    variants = [
        {"encoding": "yuv422"}, {"encoding": "16UC1"}, {"data": bytes(10)}, {"step": 3},
        {"height": 100_000, "width": 100_000}, {"stamp": Time()}, {"stamp": _stamp_at(probe, 60.0)},
    ]
    for v in variants:
        msg = Image(header=Header(stamp=v.pop("stamp", _stamp_at(probe)), frame_id="camera_link"), **{**ok, **v})
        yield msg


# Each malformed IMU message, in the order they are sent, and the reason the sensor window must give
# when it rejects it.
IMU_REJECTION = {"nan": "non_finite", "inf": "non_finite", "huge": "out_of_range", "zero_stamp": "zero_stamp",
                 "future": "future_stamp", "old": "out_of_order"}
IMU_FAULTS = tuple(IMU_REJECTION)


def _malformed_imu(probe):
    for kind in IMU_FAULTS:
        msg = Imu(header=Header(stamp=_stamp_at(probe, {"future": 60.0, "old": -30.0}.get(kind, 0.0))))
        msg.linear_acceleration.z = {"nan": float("nan"), "inf": float("inf"), "huge": 1e9}.get(kind, 9.81)
        if kind == "zero_stamp":
            msg.header.stamp = Time()
        yield msg


def _malformed_features(probe):
    good = np.zeros((1, 64), "<f4")
    nan = np.full((1, 64), np.nan, "<f4")
    variants = [("32FC1", 1, 32, good[:, :32].tobytes(), 1), ("32FC1", 1, 64, good.tobytes()[:100], 1),
                ("mono8", 1, 64, good.tobytes(), 1), ("32FC1", 1, 64, nan.tobytes(), 1),
                ("32FC1", 1, 64, good.tobytes(), 0)]
    for encoding, h, w, data, stamped in variants:
        stamp = _stamp_at(probe) if stamped else Time()
        yield Image(header=Header(stamp=stamp), encoding=encoding, height=h, width=w, step=w * 4, data=data)


@pytest.mark.timeout(240)
def test_malformed_message_flood_is_dropped_and_counted_while_chunks_keep_flowing(probe, processes):
    chunks = probe.record(JointTrajectory, "action_chunk", 10)
    diags = probe.diagnostics()
    processes.append(NodeProcess("tools.bringup.synthetic_sources", {}))
    processes.append(NodeProcess("vlm_node", VLM))
    processes.append(NodeProcess("action_expert_node", {}))
    wait_for(lambda: chunks.count() >= 10, 60, "chunks before the flood")
    pubs = {"image": probe.node.create_publisher(Image, "camera/image_raw", SENSOR_QOS),
            "sensor": probe.node.create_publisher(Imu, "sensor", SENSOR_QOS),
            "features": probe.node.create_publisher(Image, "vl_features", LATCHED_QOS),
            "instruction": probe.node.create_publisher(String, "instruction", LATCHED_QOS)}
    sent = dict.fromkeys(pubs, 0)
    imu_sent = dict.fromkeys(IMU_FAULTS, 0)
    t0 = time.monotonic()
    total = 0
    i = 0
    while total < 10_000:
        # One message per topic per round, so depth-1 (latched) subscriptions are not overwritten in a burst.
        for topic, variants in (("image", _malformed_images), ("sensor", _malformed_imu),
                                ("features", _malformed_features)):
            messages = list(variants(probe))
            pubs[topic].publish(messages[i % len(messages)])
            sent[topic] += 1
            total += 1
        imu_sent[IMU_FAULTS[i % len(IMU_FAULTS)]] += 1
        if i % 50 == 0 and sent["instruction"] < 20:  # 1 MB and whitespace-only instructions
            pubs["instruction"].publish(String(data="x" * 1_000_000 if sent["instruction"] % 2 else "   "))
            sent["instruction"] += 1
            total += 1
        i += 1
        time.sleep(0.002)  # ~1000 malformed messages/s across the topics: far above any real fault rate
    t1 = time.monotonic()
    for node in ("action_expert_node", "vlm_node"):  # counters from a diagnostics cycle after the flood
        wait_for(lambda node=node: any(node in diagnostics_of(m) for _, m in diags.since(t1 + 0.2)), 5,
                 f"{node} diagnostics after the flood")

    assert all(p.alive() for p in processes), "a node died under the flood"
    rate = chunks.rate(t0, t1)
    assert abs(rate - 10.0) <= 2.0, f"chunks at {rate:.1f} Hz during the flood"
    action = diag_values(diags, "action_expert_node")
    vlm = diag_values(diags, "vlm_node")
    sensor_rejected = int(action["sensor_rejected"])
    features_rejected = int(action["features_rejected"])
    images_rejected = int(vlm["images_rejected"])
    # Counting, exact whatever the transport loses: each IMU fault is rejected for its own reason, never
    # more often than it was sent, and the reasons add up to the rejections; reasons no fault gives stay 0
    # (the valid 650 Hz stream is never rejected).
    by_reason = {r.value: int(action[f"sensor_{r.value}"]) for r in PushResult if r is not PushResult.ACCEPTED}
    assert sum(by_reason.values()) == sensor_rejected, (by_reason, sensor_rejected)
    for reason, counted in by_reason.items():
        faults = [kind for kind, why in IMU_REJECTION.items() if why == reason]
        n = sum(imu_sent[kind] for kind in faults)
        assert (counted > 0) == bool(faults) and counted <= n, f"{reason}: {counted} counted for {n} sent"
    # Transport: best-effort topics lose part of a burst, more on a loaded 2-core machine (65-78 % of the
    # sensor flood arrived beside the 650 Hz stream in one CI run, 19 % with a third process spinning on
    # one of the two cores): at least a tenth of it. The reliable features topic loses only what overflows
    # the node's queue: 98-100 % arrive, idle or beside a busy loop, when every input drains its queue per
    # wake-up (93 % when only the sensor did, and 79 % in a CI run). No valid message may be counted as
    # rejected.
    for name, counted, n, arrives in (("sensor", sensor_rejected, sent["sensor"], 0.1),
                                      ("images", images_rejected, sent["image"], 0.1),
                                      ("features", features_rejected, sent["features"], 0.95)):
        assert arrives * n <= counted <= n, f"{name}: {counted} rejections counted for {n} malformed messages"
    assert int(action["instructions_rejected"]) + int(vlm["instructions_rejected"]) >= 2
    assert action["safe_stop_reason"] == "running"


@pytest.mark.timeout(120)
def test_a_crashing_node_leaves_its_python_stacks_in_its_log(probe, processes):
    """A segfault (a C extension's, at shutdown once in CI) kills the node; its log then says where each
    thread was, so the crash can be diagnosed from one occurrence. faulthandler reads the other threads'
    frames while they run (best effort, as its documentation says): a frame that changes under it can cut
    the dump short (once in CI, inside the 650 Hz worker's message constructor), so up to three crashes are
    tried; every one must say what killed the node, and one must show both threads."""
    diags = probe.diagnostics()
    logs = []
    for _ in range(3):
        started = time.monotonic()
        sources = NodeProcess("tools.bringup.synthetic_sources", {})
        processes.append(sources)
        wait_for(lambda t=started: any("synthetic_sources" in diagnostics_of(m) for _, m in diags.since(t)), 30,
                 "synthetic_sources running")
        sources.proc.send_signal(signal.SIGSEGV)
        assert sources.wait(10) == -signal.SIGSEGV
        logs.append(sources.output())
        assert "Fatal Python error: Segmentation fault" in logs[-1], logs[-1][-2000:]
        if "in run_node" in logs[-1] and "in _sensor_loop" in logs[-1]:  # the spin loop and the worker
            return
    pytest.fail("no dump showed both the spin loop and the sensor worker:\n" + "\n---\n".join(
        log[-1500:] for log in logs))


@pytest.mark.timeout(120)
def test_executor_stalls_lose_no_sensor_samples(probe, processes):
    """The 650 Hz stream survives stalls of the action node (an inference holding the GIL, a GC pause, a
    loaded machine): its subscription queues half of max_sensor_gap of the stream (sensor_queue_depth),
    so with max_sensor_gap 0.2 s (65 samples) a 60 ms stop of the whole process (SIGSTOP) loses nothing.
    With the sensor-data default of 5 samples (8 ms), each stop lost ~37."""
    action = NodeProcess("action_expert_node", {"max_sensor_gap": 0.2})
    stops = 8

    def stop_and_continue() -> None:
        time.sleep(1.0)
        for _ in range(stops):
            action.proc.send_signal(signal.SIGSTOP)
            time.sleep(0.06)
            action.proc.send_signal(signal.SIGCONT)
            time.sleep(0.4)

    sent, lost = _sensor_sent_and_lost(probe, processes, action, stop_and_continue)
    assert sent > 0.8 * 650 * stops * 0.46
    # A stop of 60 ms holds 39 samples; allow a tenth of one stop's worth per stop for the machine's noise.
    assert lost <= stops * 4, f"{lost} of {sent} sensor samples lost over {stops} stops of 60 ms"


def test_one_executor_wake_up_takes_every_queued_sensor_sample(rclpy_session):
    """After a stall the node drains its sensor queue in one wake-up rather than one per sample: the
    executor's per-message cost (it rebuilds its wait set each time, ~1 ms at 650 Hz here) let the queue
    overflow under load, losing 1-25 % of the stream with one or two busy cores."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from mobile_vla_ros.ros.node_support import subscribe_sensor

    listener, talker = rclpy.create_node("drain_listener"), rclpy.create_node("drain_talker")
    executor = SingleThreadedExecutor()
    executor.add_node(listener)
    try:
        stamps: list[float] = []
        subscribe_sensor(listener, Imu, lambda m: stamps.append(m.header.stamp.nanosec),
                         {"sensor_hz": 650.0, "max_sensor_gap": 0.05})  # a queue of 16
        publisher = talker.create_publisher(Imu, "sensor", SENSOR_QOS)
        wait_for(lambda: publisher.get_subscription_count() > 0, 10, "the subscription matched")
        for i in range(1, 11):  # the executor is not spinning: the samples queue up
            publisher.publish(Imu(header=Header(stamp=Time(nanosec=i))))
        time.sleep(0.5)
        deadline = time.monotonic() + 5.0
        while not stamps and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert stamps == list(range(1, 11))
    finally:
        executor.shutdown()
        listener.destroy_node()
        talker.destroy_node()


@pytest.mark.timeout(120)
def test_both_cores_busy_lose_no_sensor_samples(probe, processes):
    """Two busy loops take both cores from the nodes: the action node still receives the 650 Hz stream
    (the CI run that lost 1.8 % of it in the loop benchmark had one test process's load beside it)."""
    import multiprocessing

    from mobile_vla_ros.tools.bench.loop import busy_loop

    def load_both_cores() -> None:
        burners = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(2)]
        for b in burners:
            b.start()
        try:
            time.sleep(8.0)
        finally:
            for b in burners:
                b.kill()

    sent, lost = _sensor_sent_and_lost(probe, processes, NodeProcess("action_expert_node", {}), load_both_cores)
    assert sent > 0.8 * 650 * 8
    assert lost <= 0.01 * sent, f"{lost} of {sent} sensor samples lost with both cores busy"


def _sensor_sent_and_lost(probe, processes, action: NodeProcess, disturb) -> tuple[int, int]:
    """Sensor messages synthetic_sources sent, and those `action` did not receive, across `disturb()`:
    counted with the sensor paused before and after (the loop benchmark's exact count)."""
    from mobile_vla_ros.tools.bench.loop import quiet_sensor_counts

    probe.diagnostics()
    processes += [NodeProcess("tools.bringup.synthetic_sources", {}), action]
    wait_for(lambda: int(probe.latest_diagnostics("action_expert_node").get("sensor_accepted", "0")) > 650, 60,
             "the action node receiving the sensor stream")
    sent0, received0 = quiet_sensor_counts(probe, "action_expert_node")
    disturb()
    sent1, received1 = quiet_sensor_counts(probe, "action_expert_node")
    return sent1 - sent0, (sent1 - sent0) - (received1 - received0)


def test_the_sensor_queue_is_half_the_gap_gate():
    """Long enough to ride out stalls, short enough that a backlog never ages the newest sample past the
    gap gate (a whole window, 100 ms, stopped the robot under a malformed-message flood)."""
    from mobile_vla_ros.ros.node_support import sensor_queue_depth

    assert sensor_queue_depth(650.0, 0.05) == 16  # 25 ms of the stream
    assert sensor_queue_depth(650.0, 0.2) == 65
    assert sensor_queue_depth(650.0, 0.001) == 5  # never below sensor-data QoS's own depth
