"""mobile-vla-bringup starts both nodes from the shipped YAML (plus overrides), in a namespace, and
stops them cleanly; bad arguments give a clear error and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ros_harness import REPO, run_group, start_group, stop_group, wait_for
from trajectory_msgs.msg import JointTrajectory

pytestmark = pytest.mark.system

BRINGUP = [sys.executable, "-m", "mobile_vla_ros.tools.bringup.cli"]


@pytest.mark.timeout(120)
def test_bringup_runs_nodes_in_namespace_with_yaml(probe):
    chunks = probe.record(JointTrajectory, "/robot1/action_chunk", 10)
    proc = start_group([*BRINGUP, "--params-file", "config/robot.yaml", "--params-file",
                        "config/desktop.yaml", "--synthetic", "--namespace", "robot1", "--duration", "25"],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: chunks.count() >= 10, 60, "chunks on /robot1/action_chunk")
        assert probe.get_param("robot1/action_expert_node", "max_feature_age") == 2.0  # from robot.yaml
        assert probe.get_param("robot1/vlm_node", "device") == "cpu"  # desktop.yaml overrides robot.yaml
        proc.send_signal(2)  # Ctrl-C to the bring-up alone: it stops every node
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            stop_group(proc)
    assert proc.returncode == 0, out
    assert "exited with code" not in out


def test_bringup_rejects_missing_params_file():
    result = subprocess.run([*BRINGUP, "--params-file", "no/such.yaml"], cwd=REPO, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 2
    assert "--params-file no/such.yaml: no such file" in result.stderr


def test_bringup_reports_a_node_that_fails_to_start(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**/action_expert_node:\n  ros__parameters:\n    chunk_size: 4\n")
    result = run_group([*BRINGUP, "--params-file", "config/robot.yaml", "--params-file", "config/desktop.yaml",
                        "--params-file", str(bad), "--duration", "60"], timeout=90, cwd=REPO)
    assert result.returncode == 2, result.stderr
    assert "chunk_size: expected 8 (model.yaml), got 4" in result.stderr
    assert "action_expert_node exited with code 2" in result.stderr


def test_launch_and_bringup_order_parameter_files_by_one_rule(tmp_path):
    """`params_file_order` (robot.launch.py and mobile-vla-bringup): the base file, sim.yaml right after
    it with the simulated robot, then the overrides, so an override wins over sim.yaml."""
    from mobile_vla_ros.params_files import params_file_order

    config = REPO / "config"
    robot, slow = config / "robot.yaml", config / "sim_slow_vlm.yaml"
    assert params_file_order([], False, config) == [robot]
    assert params_file_order([], True, config) == [robot, config / "sim.yaml"]
    assert params_file_order([robot, slow], True, config) == [robot, config / "sim.yaml", slow]
    own_sim = tmp_path / "sim.yaml"
    assert params_file_order([robot, slow, own_sim], True, config) == [robot, slow, own_sim]  # kept in place
    assert params_file_order([robot, slow], False, config) == [robot, slow]
    # What the nodes get from that order: the override's VLM latency, sim.yaml's clock and autostart.
    from mobile_vla_ros.tools.bringup.processes import yaml_params

    params = yaml_params(params_file_order([robot, slow], True, config), ("vlm_node",))
    assert params["simulated_latency"] == 1.5 and params["use_sim_time"] is True and params["autostart"] is True
    action = yaml_params(params_file_order([robot], False, config), ("action_expert_node",))
    assert action["autostart"] is False  # on the robot the operator arms the action expert


def test_the_sync_baselines_get_both_nodes_parameters_and_their_own_vlm_rate():
    """sync_baseline_node from the same files as the two nodes: a decision per forward (no action_hz), its
    VLM back to back up to SYNC_LOOP_VLM_HZ (sync) or at the files' vlm_hz, the split's (sync-at-vlm-hz)."""
    from mobile_vla_ros.core.params import SYNC_LOOP_VLM_HZ
    from mobile_vla_ros.tools.bringup.sim_job import policy_processes, sync_node_params

    config = REPO / "config"
    files = [config / "robot.yaml", config / "sim.yaml", config / "sim_slow_vlm.yaml"]
    plain, budget = sync_node_params("sync", files), sync_node_params("sync-at-vlm-hz", files)
    assert plain["vlm_hz"] == SYNC_LOOP_VLM_HZ and budget["vlm_hz"] == 0.59
    for params in (plain, budget):
        assert "action_hz" not in params
        assert params["simulated_latency"] == 1.5 and params["max_feature_age"] == 4.7
    with pytest.raises(ValueError, match="expected one of async, sync, sync-at-vlm-hz"):
        policy_processes("synchronous", files, "", "info", REPO)


@pytest.mark.timeout(90)
def test_stop_all_shuts_nodes_down_cleanly_and_kills_what_outlives_the_timeout(tmp_path):
    from mobile_vla_ros.tools.bringup.processes import NodeProcess, stop_all

    def started_pair(log_dir=None) -> list[NodeProcess]:
        pair = [NodeProcess("tools.bringup.synthetic_sources", {}, log_dir=log_dir),
                NodeProcess("action_expert_node", {}, log_dir=log_dir)]
        wait_for(lambda: "]: active" in pair[1].output() or not pair[1].alive(), 60, "the action node active")
        return pair

    clean = started_pair()
    own_dirs = [Path(p.log.name).parent for p in clean]
    stop_all(clean)
    assert [p.proc.returncode for p in clean] == [0, 0], [p.output()[-1500:] for p in clean]
    assert "Traceback" not in clean[1].output()
    # Given no log directory, a node's files (parameters, log) go with it; its output stays readable.
    assert not any(d.exists() for d in own_dirs) and "]: active" in clean[1].output()

    cut_short = started_pair(log_dir=tmp_path)
    stop_all(cut_short, timeout=0.0)  # no time for a clean shutdown: killed, not left running
    assert all(p.proc.returncode == -9 for p in cut_short), [p.proc.returncode for p in cut_short]
    assert len(list(tmp_path.glob("*.log"))) == 2  # asked for: kept


def test_a_timed_out_group_leaves_no_child_running():
    """The harness's timeout stops the command's children too (a bring-up killed alone leaves its nodes
    running, loading every later test): here a shell whose child ignores SIGINT."""
    import psutil

    marker = "mobile_vla_group_test_9d1c"
    with pytest.raises(subprocess.TimeoutExpired):
        run_group(["bash", "-c", f"trap '' INT; exec -a {marker} sleep 60 & wait"], timeout=1.0, grace=0.5)
    assert not [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(p.info["cmdline"] or [])]
