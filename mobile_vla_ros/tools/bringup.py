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
import tempfile
import time
from pathlib import Path

import yaml

from ..params_files import first_params_file_error
from ..paths import share_dir

NODES = ("vlm_node", "action_expert_node")


def node_command(module: str, params_files: list[Path], namespace: str, log_level: str,
                 extra_ros_args: list[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", f"mobile_vla_ros.{module}", "--ros-args"]
    for f in params_files:
        cmd += ["--params-file", str(f)]
    if namespace:
        cmd += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
    cmd += ["--log-level", log_level, *extra_ros_args]
    return cmd


class NodeProcess:
    """One node as a child process: `python -m mobile_vla_ros.<module> --ros-args ...`, its parameters
    from `params` (written to a YAML file) and/or `params_files`, its output in a log file.
    `stop` always ends it: SIGINT first (the node shuts down cleanly), kill after `timeout`."""

    def __init__(self, module: str, params: dict | None = None, node_name: str | None = None,
                 extra_args: list[str] = (), params_files: list[Path] = (), namespace: str = "",
                 log_level: str = "info", log_dir: Path | None = None) -> None:
        self.module = module
        self.node_name = node_name or module.split(".")[-1]
        files = list(params_files)
        if params:
            fd, path = tempfile.mkstemp(suffix=".yaml", prefix=f"{self.node_name}_", dir=log_dir)
            with os.fdopen(fd, "w") as fh:
                yaml.safe_dump({f"/**/{self.node_name}": {"ros__parameters": params}}, fh)
            files.append(Path(path))
        cmd = node_command(module, files, namespace, log_level, list(extra_args))
        self.log = tempfile.NamedTemporaryFile(prefix=f"{self.node_name}_", suffix=".log", delete=False, dir=log_dir)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)


def yaml_params(files: list[Path], nodes: tuple[str, ...]) -> dict:
    """Parameters the `nodes` get from ROS 2 parameter files (`/**`, `/**/node` or `node` keys), merged
    in file order (later files win), for a process that does the work of several nodes."""
    merged: dict = {}
    for f in files:
        data = yaml.safe_load(f.read_text()) or {}
        for key, section in data.items():
            if key.rsplit("/", 1)[-1] in (*nodes, "**"):
                merged.update((section or {}).get("ros__parameters", {}))
    return merged


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
                         "--out/report.json and trajectories.png. config/sim.yaml is added after --params-file "
                         "(default config/robot.yaml) unless given among them")
    ap.add_argument("--episodes", type=int, default=20, help="--sim: episodes to run")
    ap.add_argument("--seed", type=int, default=1000, help="--sim: first episode's task seed (held out from the "
                                                           "training seeds 0-999)")
    ap.add_argument("--time-limit", type=float, default=None, help="--sim: s per episode (default: config/sim.yaml)")
    ap.add_argument("--out", type=Path, default=Path("sim_results"), help="--sim: report directory")
    ap.add_argument("--mode", choices=["async", "sync"], default="async",
                    help="--sim: async = vlm_node + action_expert_node; sync = the synchronous baseline loop "
                         "(sync_baseline_node: every decision waits for a VLM forward), same parameter files")
    ap.add_argument("--task-set", choices=["standard", "hard"], default="standard",
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
    params_files = args.params_file or [config / "robot.yaml"]
    if args.sim and not any(f.name == "sim.yaml" for f in params_files):
        # The nodes must run on the simulator's clock: sim.yaml (use_sim_time, sim_node, CPU VLM) goes last
        # unless the user placed it themselves (then files after it can override it).
        params_files = [*params_files, config / "sim.yaml"]
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
            "tools.synthetic_sources", [], args.namespace, args.log_level,
            ["-p", f"instruction:={args.instruction}"])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.synthetic:  # everything runs on this machine: keep DDS discovery on loopback
        env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
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
    from ..sim import cannot_simulate

    reason = cannot_simulate(args.episodes)
    if reason:
        print(f"mobile-vla-bringup: error: {reason}", file=sys.stderr)
        return 2
    from .sim_run import sim_job

    # Everything runs on this machine: keep DDS discovery on loopback.
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    try:
        sim_job(params_files, args.episodes, args.seed, args.out, args.namespace, args.log_level, args.time_limit,
                args.mode, args.task_set)
    except RuntimeError as exc:
        print(f"mobile-vla-bringup: error: {exc}", file=sys.stderr)
        return 1
    return 0


SUMMARY_KEYS: dict[str, tuple[str, ...]] = {
    "vlm_node": ("feature_rate_hz", "vlm_hz", "forward_latency_p50_ms", "forward_latency_p99_ms",
                 "skipped_busy", "images_rejected", "clock_jumps"),
    "action_expert_node": ("chunk_rate_hz", "action_hz", "sensor_rate_hz", "feature_age_s",
                           "inference_latency_p50_ms", "inference_latency_p99_ms", "backend",
                           "safe_stop_events", "safe_stop_reason", "clock_jumps"),
    "sync_baseline_node": ("chunk_rate_hz", "feature_rate_hz", "forward_latency_p50_ms", "sensor_accepted",
                           "safe_stop_reason"),
}


class DiagnosticsMonitor:
    """Listens to /diagnostics in this process and keeps the newest status of each node."""

    def __init__(self) -> None:
        from .ros_observer import Observer

        # A private context without rclpy signal handlers: Ctrl-C must reach bring-up's own handler.
        self._observer = Observer("bringup_monitor", own_context=True)
        self._observer.diagnostics()

    def summary(self, nodes: tuple[str, ...]) -> str:
        lines = ["", "mobile-vla-bringup summary (last diagnostics of each node)"]
        for node in nodes:
            keys = SUMMARY_KEYS[node]
            values = self._observer.latest_diagnostics(node)
            if not values:
                lines.append(f"  {node}: no diagnostics received")
                continue
            lines.append(f"  {node}:")
            lines += [f"    {key:<26} {values.get(key, '-')}" for key in keys]
        return "\n".join(lines)

    def close(self) -> None:
        self._observer.destroy()


def shutdown(procs: dict[str, subprocess.Popen], timeout: float = 10.0) -> None:
    """SIGINT everything but the action node first, then the action node (it sends the final zero)."""
    order = sorted(procs, key=lambda n: n == "action_expert_node")
    for name in order:
        proc = procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
