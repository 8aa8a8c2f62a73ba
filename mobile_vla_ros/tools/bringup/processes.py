"""Nodes as child processes (what bring-up, the benchmarks and live replay start): the command line
of `python -m mobile_vla_ros.<module> --ros-args ...`, a process with its log and a clean stop, and
the parameters a set of ROS 2 parameter files gives a node."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


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
    `stop` always ends it: SIGINT first (the node shuts down cleanly), kill after `timeout`.
    Without `log_dir` the two files live in a directory of its own that is removed once the process has
    ended and been waited for (`stop`, `wait`, `stop_all`); `output()` still returns the log then."""

    def __init__(self, module: str, params: dict | None = None, node_name: str | None = None,
                 extra_args: list[str] = (), params_files: list[Path] = (), namespace: str = "",
                 log_level: str = "info", log_dir: Path | None = None) -> None:
        self.module = module
        self.node_name = node_name or module.split(".")[-1]
        files = list(params_files)
        self._own_dir: Path | None = None
        if log_dir is None:
            log_dir = self._own_dir = Path(tempfile.mkdtemp(prefix=f"mobile_vla_{self.node_name}_"))
        self._ended_output: str | None = None
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
        if self._ended_output is not None:
            return self._ended_output
        return Path(self.log.name).read_text(errors="replace")

    def _release_files(self) -> None:
        """Once the process has ended: its log kept in memory, its own directory removed."""
        if self._own_dir is None or self._ended_output is not None or self.alive():
            return
        self.log.close()
        self._ended_output = Path(self.log.name).read_text(errors="replace")
        shutil.rmtree(self._own_dir, ignore_errors=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_kb(self) -> int:
        import psutil

        return psutil.Process(self.pid).memory_info().rss // 1024

    def stop(self, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        stop_all([self], sig, timeout)
        return self.proc.returncode

    def wait_or_kill(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._release_files()

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._release_files()
        return code


def stop_all(processes, sig: int = signal.SIGINT, timeout: float = 10.0) -> None:
    """`NodeProcess.stop` for several at once: all are signalled first, so that their clean shutdowns
    (about a second each) overlap; any still running after `timeout` is killed."""
    processes = list(processes)
    for p in processes:
        if p.alive():
            p.proc.send_signal(sig)
    deadline = time.monotonic() + timeout
    for p in processes:  # signalled once: a second SIGINT could interrupt a node's clean shutdown
        p.wait_or_kill(max(0.0, deadline - time.monotonic()))


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
