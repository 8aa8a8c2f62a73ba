"""mobile-vla-bringup: start vlm_node and action_expert_node (and optionally a robot stand-in) with the
same YAML as `ros2 launch mobile_vla_ros robot.launch.py`, for machines without `ros2 launch`.

Each node is a separate process (as launch would start it); Ctrl-C / SIGTERM stops them all,
action_expert_node last so its final zero cmd_vel goes out while the rest is still up.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ...core.params import SIM_POLICY_MODES
from ...params_files import first_params_file_error, params_file_order
from ...paths import share_dir
from ...sim.world import TASK_SETS
from .processes import node_command, shutdown

NODES = ("vlm_node", "action_expert_node")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-bringup", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params-file", type=Path, action="append", default=None,
                    help="ROS 2 parameter YAML (repeatable; later files override). "
                         "Default: config/robot.yaml of the package")
    ap.add_argument("--namespace", default="", help="namespace of both nodes")
    ap.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error", "fatal"])
    ap.add_argument("--sim", action="store_true",
                    help="closed loop with the MuJoCo simulated robot: run --episodes seeded episodes, print success "
                         "rate (beside zero/random-action baselines), rates, feature age and latency, write "
                         "--out/report.json and trajectories.png. config/sim.yaml is added after the first "
                         "--params-file (default config/robot.yaml) unless given among them, as robot.launch.py "
                         "use_sim:=true does")
    ap.add_argument("--episodes", type=int, default=20, help="--sim: episodes to run")
    ap.add_argument("--seed", type=int, default=1000, help="--sim: first episode's task seed (held out from the "
                                                           "training seeds 0-999)")
    ap.add_argument("--time-limit", type=float, default=None, help="--sim: s per episode (default: config/sim.yaml)")
    ap.add_argument("--out", type=Path, default=Path("sim_results"), help="--sim: report directory")
    ap.add_argument("--mode", choices=SIM_POLICY_MODES, default="async",
                    help="--sim: async = vlm_node + action_expert_node; sync = the synchronous baseline loop "
                         "(sync_baseline_node: every decision waits for a VLM forward, its VLM back to back); "
                         "sync-at-vlm-hz = that loop with the files' vlm_hz (the split's VLM compute); same "
                         "parameter files")
    ap.add_argument("--task-set", choices=TASK_SETS, default="standard",
                    help="--sim: hard = targets beside/behind the robot, same-colour distractors, up to 4 m, "
                         "instruction phrasings never trained on (time limit 30 s)")
    ap.add_argument("--synthetic", action="store_true",
                    help="also start synthetic_sources (camera, 650 Hz IMU, instruction) instead of a robot")
    ap.add_argument("--instruction", default="go to the red cylinder", help="instruction for --synthetic")
    ap.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0 = run until Ctrl-C)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = share_dir() / "config"
    params_files = params_file_order(args.params_file or [], args.sim, config)
    for f in params_files:
        if not f.is_file():
            print(f"mobile-vla-bringup: error: --params-file {f}: no such file", file=sys.stderr)
            return 2
    bad_file = first_params_file_error(params_files)
    if bad_file:  # before anything starts, instead of one traceback per node
        print(f"mobile-vla-bringup: error: {bad_file}", file=sys.stderr)
        return 2
    if args.sim:
        return _sim(args, params_files)
    commands = {name: node_command(name, params_files, args.namespace, args.log_level) for name in NODES}
    if args.synthetic:
        commands["synthetic_sources"] = node_command(
            "tools.bringup.synthetic_sources", [], args.namespace, args.log_level,
            ["-p", f"instruction:={args.instruction}"])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.synthetic:  # everything runs on this machine: keep DDS discovery on loopback
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    from ..ros_observer import DiagnosticsMonitor  # imports rclpy: only when nodes run

    monitor = DiagnosticsMonitor() if args.duration > 0 else None
    procs: dict[str, subprocess.Popen] = {}
    stop = {"requested": False}

    def request_stop(*_):
        stop["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    for name, cmd in commands.items():
        procs[name] = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    code = 0
    try:
        while not stop["requested"] and time.monotonic() < deadline:
            failed = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            if failed:
                for name, rc in failed.items():
                    print(f"mobile-vla-bringup: {name} exited with code {rc}", file=sys.stderr)
                code = next(iter(failed.values())) or 1
                break
            time.sleep(0.2)
    finally:
        report = monitor.summary(NODES) if monitor is not None else ""
        shutdown(procs)
        if monitor is not None:
            monitor.close()
    if report:
        print(report)
    return code


def _sim(args, params_files: list[Path]) -> int:
    from ...sim import cannot_simulate

    reason = cannot_simulate(args.episodes)
    if reason:
        print(f"mobile-vla-bringup: error: {reason}", file=sys.stderr)
        return 2
    from .sim_job import sim_job

    # Everything runs on this machine: keep DDS discovery on loopback.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        sim_job(params_files, args.episodes, args.seed, args.out, args.namespace, args.log_level, args.time_limit,
                args.mode, args.task_set)
    except RuntimeError as exc:
        print(f"mobile-vla-bringup: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
