"""The main job in small: `mobile-vla-bringup --sim` drives seeded episodes closed-loop through the
real node processes (sim_node, vlm_node, action_expert_node on sim time), then reports success
beside zero/random-action baselines, the nodes' achieved rates, feature age and latency."""

from __future__ import annotations

import json
import sys

import pytest
from ros_harness import run_group

from mobile_vla_ros.paths import share_dir

pytestmark = pytest.mark.system


@pytest.mark.timeout(400)
def test_bringup_sim_runs_episodes_closed_loop_and_reports(tmp_path):
    out = tmp_path / "report"
    proc = run_group([sys.executable, "-m", "mobile_vla_ros.tools.bringup.cli", "--sim", "--episodes", "3",
                      "--out", str(out)], timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    episodes = report["episodes"]
    assert [e["seed"] for e in episodes] == [1000, 1001, 1002]  # held-out seeds (training uses < 1000)
    assert sum(e["success"] for e in episodes) >= 1
    assert all(len(e["path"]) > 5 for e in episodes)
    # The first scene waited for the policy's first chunk: seed 1000's time is control, not the nodes'
    # start-up (4.4 s in process and through the nodes; 8.6-16.8 s when it counted the start-up).
    assert episodes[0]["duration"] < 7.0, episodes[0]["duration"]
    assert report["baseline_success_rate"] == {"zero": 0.0, "random": 0.0}
    vlm, action = report["diagnostics"]["vlm_node"], report["diagnostics"]["action_expert_node"]
    assert float(vlm["feature_rate_hz"]) == pytest.approx(float(vlm["vlm_hz"]), rel=0.2)
    assert float(action["chunk_rate_hz"]) == pytest.approx(float(action["action_hz"]), rel=0.2)
    assert float(action["sensor_rate_hz"]) == pytest.approx(650, rel=0.2)
    assert float(action["feature_age_s"]) < 1.0
    # Chunk boundaries do not brake the robot: a command due before the next chunk keeps the last step
    # (before that grace, nearly every boundary had a used-up step: as many as chunks).
    assert int(action["exhausted_chunk_steps"]) <= 0.25 * int(action["chunks_published"]), action
    assert (out / "trajectories.png").stat().st_size > 10_000
    assert "model, async (closed loop, ROS nodes)" in proc.stdout and "zero-action baseline" in proc.stdout


def bringup_sim(tmp_path, *args, timeout=380) -> dict:
    proc = run_group([sys.executable, "-m", "mobile_vla_ros.tools.bringup.cli", "--sim", "--out", str(tmp_path),
                      *args], timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((tmp_path / "report.json").read_text())


@pytest.mark.timeout(400)
def test_a_slow_vlm_still_reaches_the_targets_through_the_real_nodes(tmp_path):
    """1.5 s per forward at 0.59 Hz (config/sim_slow_vlm.yaml): features are reused for up to 3 s, and
    the model corrects them by the motion since their image."""
    config = share_dir() / "config"
    report = bringup_sim(tmp_path, "--episodes", "3", *[a for f in ("robot.yaml", "sim.yaml", "sim_slow_vlm.yaml")
                                                        for a in ("--params-file", str(config / f))])
    assert sum(e["success"] for e in report["episodes"]) >= 2
    vlm = report["diagnostics"]["vlm_node"]
    assert float(vlm["forward_latency_p50_ms"]) == pytest.approx(1500, rel=0.05)  # the slow VLM was in the loop
    assert float(vlm["vlm_hz"]) == pytest.approx(0.59)


@pytest.mark.timeout(400)
def test_the_synchronous_loop_drives_the_simulated_robot_through_its_node(tmp_path):
    report = bringup_sim(tmp_path, "--episodes", "2", "--mode", "sync")
    assert report["mode"] == "sync" and "sync_baseline_node" in report["diagnostics"]
    assert "action_expert_node" not in report["diagnostics"]
    assert any(len(e["path"]) > 5 and e["final_distance"] < 1.0 for e in report["episodes"])  # it drove



@pytest.mark.timeout(400)
def test_episodes_that_reset_the_clock_go_through_the_jump_path_and_still_succeed(tmp_path):
    """sim_node with reset_clock: every episode starts the clock again (a world reset), so the nodes
    clear and stop at each episode start, and recover on the new episode's data."""
    extra = tmp_path / "reset_clock.yaml"
    extra.write_text("sim_node:\n  ros__parameters:\n    reset_clock: true\n")
    config = share_dir() / "config"
    report = bringup_sim(tmp_path / "out", "--episodes", "3", *[a for f in (config / "robot.yaml", config / "sim.yaml",
                                                                          extra) for a in ("--params-file", str(f))])
    assert sum(e["success"] for e in report["episodes"]) >= 1
    for node in ("action_expert_node", "vlm_node"):  # each reset went through the jump path
        assert int(report["diagnostics"][node]["clock_jumps"]) >= 2, report["diagnostics"][node]
