"""The main job in small: `mobile-vla-bringup --sim` drives seeded episodes closed-loop through the
real node processes (sim_node, vlm_node, action_expert_node on sim time), then reports success
beside zero/random-action baselines, the nodes' achieved rates, feature age and latency."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.timeout(400)
def test_bringup_sim_runs_episodes_closed_loop_and_reports(tmp_path):
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "mobile_vla_ros.tools.bringup", "--sim", "--episodes", "3",
                           "--out", str(out)], capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    episodes = report["episodes"]
    assert [e["seed"] for e in episodes] == [1000, 1001, 1002]  # held-out seeds (training uses < 1000)
    assert sum(e["success"] for e in episodes) >= 1
    assert all(len(e["path"]) > 5 for e in episodes)
    assert report["baseline_success_rate"] == {"zero": 0.0, "random": 0.0}
    vlm, action = report["diagnostics"]["vlm_node"], report["diagnostics"]["action_expert_node"]
    assert float(vlm["feature_rate_hz"]) == pytest.approx(float(vlm["vlm_hz"]), rel=0.2)
    assert float(action["chunk_rate_hz"]) == pytest.approx(float(action["action_hz"]), rel=0.2)
    assert float(action["sensor_rate_hz"]) == pytest.approx(650, rel=0.2)
    assert float(action["feature_age_s"]) < 1.0
    assert (out / "trajectories.png").stat().st_size > 10_000
    assert "default model (closed loop, ROS nodes)" in proc.stdout and "zero-action baseline" in proc.stdout
