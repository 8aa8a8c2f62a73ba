"""Managed (lifecycle) nodes with real processes over DDS, driven as `ros2 lifecycle set` drives them:
with autostart false nothing is published before activate; deactivate stops the robot within one
action period and silences action_chunk; activate resumes at action_hz; a configure that fails
leaves the node unconfigured, alive, with the reason on /diagnostics."""

from __future__ import annotations

import time

import pytest
from geometry_msgs.msg import Twist
from ros_harness import NodeProcess, diag_values, lifecycle_state_once_up, wait_for
from sensor_msgs.msg import Image
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.system

ACTION_HZ = 10.0
DELIVERY_MARGIN = 0.3  # DDS delivery and scheduling on a loaded 2-core machine
VLM = {"device": "cpu", "dtype": "fp32", "vlm_hz": 3.0}


def is_zero(t: Twist) -> bool:
    return t.linear.x == 0.0 and t.angular.z == 0.0


def chunk_rate(chunks, seconds: float = 3.0) -> float:
    t0 = time.monotonic()
    wait_for(lambda: len(chunks.since(t0)) >= 3, 30, "chunks")
    t1 = time.monotonic()
    time.sleep(seconds)
    return chunks.rate(t1, t1 + seconds)


@pytest.mark.timeout(240)
def test_nothing_moves_before_the_arm_step_and_deactivate_stops_within_one_action_period(probe, processes):
    features = probe.record(Image, "vl_features", 10)
    chunks = probe.record(JointTrajectory, "action_chunk", 10)
    twists = probe.record(Twist, "cmd_vel", 10)
    diags = probe.diagnostics()
    processes.append(NodeProcess("tools.bringup.synthetic_sources", {}))
    processes.append(NodeProcess("vlm_node", {**VLM, "autostart": False}))
    processes.append(NodeProcess("action_expert_node", {"autostart": False, "action_hz": ACTION_HZ,
                                                        "zero_cmd_hold": 60.0}))
    for node in ("vlm_node", "action_expert_node"):
        wait_for(lambda n=node: lifecycle_state_once_up(probe, n) == "unconfigured", 60, f"{node} unconfigured")
    wait_for(lambda: diag_values(diags, "action_expert_node").get("lifecycle_state") == "unconfigured", 10,
             "the lifecycle state on /diagnostics")
    assert probe.change_state("vlm_node", "configure") and probe.change_state("action_expert_node", "configure")
    assert probe.lifecycle_state("action_expert_node") == "inactive"
    time.sleep(2.0)  # inputs flow (synthetic camera and IMU); configured nodes still must not publish
    assert features.count() == chunks.count() == twists.count() == 0, "published before activate"

    # The arm step.
    assert probe.change_state("vlm_node", "activate") and probe.change_state("action_expert_node", "activate")
    assert chunk_rate(chunks) == pytest.approx(ACTION_HZ, rel=0.2)
    assert any(not is_zero(m) for _, m in twists.since(0.0)), "active: the robot is driven"

    requested = time.monotonic()
    assert probe.change_state("action_expert_node", "deactivate")
    answered = time.monotonic()
    time.sleep(2.0)
    after = twists.since(requested)
    assert after and is_zero(after[-1][1]), "deactivate must end with a zero cmd_vel"
    first_zero = next(t for t, m in after if is_zero(m))
    assert first_zero <= answered + 1 / ACTION_HZ + DELIVERY_MARGIN, \
        f"zero cmd_vel {first_zero - answered:.2f} s after deactivate returned"
    assert all(is_zero(m) for _, m in twists.since(first_zero)), "moved again while inactive"
    assert not chunks.since(answered + DELIVERY_MARGIN), "action_chunk published while inactive"
    assert not twists.since(answered + DELIVERY_MARGIN), "cmd_vel published while inactive"
    assert probe.lifecycle_state("action_expert_node") == "inactive"
    wait_for(lambda: diag_values(diags, "action_expert_node").get("lifecycle_state") == "inactive", 3,
             "inactive on /diagnostics")

    assert probe.change_state("action_expert_node", "activate")
    assert chunk_rate(chunks) == pytest.approx(ACTION_HZ, rel=0.2)

    # The VLM node too: deactivated, it publishes no features (the action node then stops on their age).
    assert probe.change_state("vlm_node", "deactivate")
    stopped = time.monotonic()
    time.sleep(1.5)
    assert not features.since(stopped + DELIVERY_MARGIN), "vl_features published while inactive"
    assert all(p.alive() for p in processes)


@pytest.mark.timeout(120)
def test_a_failed_configure_leaves_the_node_unconfigured_and_alive_with_the_reason(probe, processes, tmp_path):
    diags = probe.diagnostics()
    missing = tmp_path / "no_model"
    missing.mkdir()
    action = NodeProcess("action_expert_node", {"autostart": False, "model_dir": str(missing)})
    processes.append(action)
    wait_for(lambda: lifecycle_state_once_up(probe, "action_expert_node") == "unconfigured", 60, "the node up")
    assert not probe.change_state("action_expert_node", "configure")
    assert probe.lifecycle_state("action_expert_node") == "unconfigured"
    wait_for(lambda: "model.yaml" in diag_values(diags, "action_expert_node").get("_message", ""), 5,
             "the reason on /diagnostics")
    values = diag_values(diags, "action_expert_node")
    assert values["_level"] == "2" and values["_message"].startswith("unconfigured: ")
    assert str(missing) in values["_message"]
    assert action.alive()
    assert "configure failed, staying unconfigured" in action.output()
    assert not probe.change_state("action_expert_node", "activate")  # no activate from unconfigured
    assert action.alive()
