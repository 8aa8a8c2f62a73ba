"""Closed-loop system benchmarks: the real nodes as separate processes over real DDS, fed by
`synthetic_sources`, measured from outside the nodes by an Observer (topic arrivals, /diagnostics)
and a ProcessSampler (psutil).

  loop   async (vlm_node + action_expert_node) vs the synchronous baseline (sync_baseline_node)
  (the soak, `soak.py`, runs the same system for minutes)

The VLM is the shipped tiny Kosmos-2 plus `simulated_latency`: the forward runs for real and then
sleeps until the requested latency has passed, so "VLM latency 1.5 s" is a 1.5 s forward that does
not burn CPU for 1.5 s (a real VLM runs on the GPU, not on the cores the nodes share).
"""

from __future__ import annotations

import math
import multiprocessing
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.names import CHUNK_TOPIC, FEATURES_TOPIC
from ...core.params import SYNC_LOOP_VLM_HZ
from ...core.safety import feature_age_limit
from ...paths import share_dir
from ...ros.conversions import stamp_to_sec
from ..bringup.processes import NodeProcess, stop_all, yaml_params
from ..ros_observer import Observer, ProcessSampler, wait_for

ASYNC, SYNC = "async", "sync"


@dataclass(frozen=True)
class LoopConfig:
    mode: str = ASYNC
    vlm_latency: float = 0.3
    sensor_hz: float = 650.0
    action_hz: float = 10.0
    seconds: float = 30.0
    warmup: float = 5.0
    cpu_burners: int = 0
    sim_time: bool = False  # synthetic_sources publishes /clock, the nodes run on use_sim_time


def config_files() -> list[Path]:
    """The YAML the main job uses: robot defaults + the overrides for a computer without a GPU."""
    return [share_dir() / "config" / "robot.yaml", share_dir() / "config" / "desktop.yaml"]


def vlm_hz_of(cfg: LoopConfig) -> float:
    """The async loop's VLM rate: one forward after another, at most 10 Hz."""
    return min(10.0, 1.0 / cfg.vlm_latency)


def max_feature_age(cfg: LoopConfig) -> float:
    # Features are reused for up to one VLM period after a forward of `vlm_latency`: the gate must let
    # that through, or the benchmark would measure safe stops instead of the loop.
    return feature_age_limit(cfg.vlm_latency, vlm_hz_of(cfg))


def vlm_process(cfg: LoopConfig, log_dir: Path | None = None) -> NodeProcess:
    """The async loop's vlm_node (also how the soak restarts it after killing it)."""
    return NodeProcess("vlm_node", {"simulated_latency": cfg.vlm_latency, "vlm_hz": vlm_hz_of(cfg),
                                    "use_sim_time": cfg.sim_time}, params_files=config_files(), log_dir=log_dir)


def start_nodes(cfg: LoopConfig, log_dir: Path | None = None) -> dict[str, NodeProcess]:
    files = config_files()
    common = {"simulated_latency": cfg.vlm_latency, "max_feature_age": max_feature_age(cfg),
              "use_sim_time": cfg.sim_time}
    procs: dict[str, NodeProcess] = {}
    if cfg.mode == ASYNC:
        procs["vlm_node"] = vlm_process(cfg, log_dir)
        procs["action_expert_node"] = NodeProcess(
            "action_expert_node", {"action_hz": cfg.action_hz, "max_feature_age": common["max_feature_age"],
                                   "use_sim_time": cfg.sim_time}, params_files=files, log_dir=log_dir)
    else:
        params = yaml_params(files, ("vlm_node", "action_expert_node")) | common
        params["vlm_hz"] = SYNC_LOOP_VLM_HZ
        params.pop("action_hz", None)
        for key in ("execute_chunks", "execute_hz", "twist_stamped", "twist_mapping", "action_limits",
                    "max_action_step", "zero_cmd_hold"):
            params.pop(key, None)
        procs["sync_baseline_node"] = NodeProcess("tools.bringup.sync_baseline", params, node_name="sync_baseline_node",
                                                  log_dir=log_dir)
    procs["synthetic_sources"] = NodeProcess("tools.bringup.synthetic_sources", {"sensor_hz": cfg.sensor_hz,
                                                                         "publish_clock": cfg.sim_time},
                                             log_dir=log_dir)
    return procs


def _policy_node(cfg: LoopConfig) -> str:
    return "action_expert_node" if cfg.mode == ASYNC else "sync_baseline_node"


class LoopObserver(Observer):
    """Chunk arrivals (monotonic time, ROS time, stamp of the newest sensor sample used, steps) and
    feature stamps, recorded at arrival; the statistics are computed afterwards."""

    def __init__(self, sim_time: bool = False) -> None:
        from sensor_msgs.msg import Image
        from trajectory_msgs.msg import JointTrajectory

        super().__init__("bench_loop_observer", own_context=True, sim_time=sim_time)
        self.chunks = self.record(JointTrajectory, CHUNK_TOPIC, 10, self._chunk_item, publish_times=True)
        self.features = self.record(Image, FEATURES_TOPIC, transform=lambda m: stamp_to_sec(m.header.stamp))
        self.diagnostics()

    def _chunk_item(self, msg) -> tuple[float, float, int]:
        return self.ros_now(), stamp_to_sec(msg.header.stamp), len(msg.points)


def _percentiles(values, qs=(50, 99)) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": math.nan for q in qs} | {"max": math.nan}
    return {f"p{q}": float(np.percentile(arr, q)) for q in qs} | {"max": float(arr.max())}


def chunk_statistics(chunks: list[tuple[float, tuple[float, float, int]]],
                     features: list[tuple[float, float]], action_hz: float,
                     exclude: list[tuple[float, float]] = ()) -> dict:
    """Periods, period error vs 1/action_hz, end-to-end latency and feature age from arrivals.
    Periods that overlap an `exclude` window (an injected fault, when the loop is meant to stop) are
    not periods of the running loop and are left out."""
    if len(chunks) < 2:
        return {"chunks": len(chunks)}
    arrivals = np.array([t for t, _ in chunks])
    keep = np.ones(len(arrivals) - 1, dtype=bool)
    for t0, t1 in exclude:
        keep &= ~((arrivals[:-1] < t1) & (arrivals[1:] > t0))
    periods = np.diff(arrivals)[keep]
    span = arrivals[-1] - arrivals[0]
    e2e, ages, i, latest = [], [], 0, None
    for t, (ros_arrival, sensor_stamp, _) in chunks:  # newest features that had arrived with the chunk
        while i < len(features) and features[i][0] <= t:
            latest = features[i][1]
            i += 1
        if any(t0 <= t <= t1 for t0, t1 in exclude):
            continue
        e2e.append(ros_arrival - sensor_stamp)
        if latest is not None:
            ages.append(sensor_stamp - latest)
    steps = chunks[-1][1][2]
    return {
        "chunks": len(chunks), "chunks_per_s": (len(chunks) - 1) / span,
        "actions_per_s": (len(chunks) - 1) * steps / span,
        "period_ms": {k: v * 1e3 for k, v in _percentiles(periods).items()},
        "period_error_ms": {k: v * 1e3 for k, v in _percentiles(np.abs(periods - 1.0 / action_hz)).items()},
        "deadline_misses": int(np.sum(periods > 1.5 / action_hz)),
        "end_to_end_ms": {k: v * 1e3 for k, v in _percentiles(e2e).items()},
        "feature_age_s": _percentiles(ages, (50,)),
    }


def busy_loop() -> None:
    """One core's worth of load (a process target): the benchmarks' and tests' loaded machine."""
    while True:
        pass


def _sensor_counts(observer: Observer, policy: str) -> tuple[int, int]:
    sent = observer.latest_diagnostics("synthetic_sources").get("sensor_sent", "0")
    values = observer.latest_diagnostics(policy)
    received = int(values.get("sensor_accepted", "0")) + int(values.get("sensor_rejected", "0"))
    return int(sent), received


def _set_sensor(observer: Observer, enabled: bool) -> None:
    result = observer.set_param("/synthetic_sources", "sensor_enabled", enabled)
    if not result.successful:
        raise RuntimeError(f"synthetic_sources refused sensor_enabled={enabled}: {result.reason}")


def quiet_sensor_counts(observer: Observer, policy: str) -> tuple[int, int]:
    """Sensor sent/received with the sensor paused: both counters stable, read after a diagnostics cycle."""
    _set_sensor(observer, False)
    time.sleep(2.5)
    counts = _sensor_counts(observer, policy)
    _set_sensor(observer, True)
    return counts


def run_loop(cfg: LoopConfig, sample_every: float = 1.0, progress=None) -> dict:
    """One run: start, warm up, measure `cfg.seconds`, stop; everything measured from outside."""
    policy = _policy_node(cfg)
    with running_system(cfg) as (procs, observer):
        time.sleep(cfg.warmup)
        sent0, received0 = quiet_sensor_counts(observer, policy)
        time.sleep(1.0 + 2.0 * cfg.vlm_latency)  # back to running after the pause
        sampler = ProcessSampler({name: p.pid for name, p in procs.items()})
        t0 = time.monotonic()
        sampler.sample()
        while time.monotonic() - t0 < cfg.seconds:
            time.sleep(sample_every)
            sampler.sample()
            raise_if_dead(procs)
            if progress is not None:
                progress(min(1.0, (time.monotonic() - t0) / cfg.seconds))
        t1 = time.monotonic()
        sent1, received1 = quiet_sensor_counts(observer, policy)
        stats = chunk_statistics([c for c in observer.chunks.since(t0) if c[0] <= t1],
                                 observer.features.since(0.0), cfg.action_hz)
        sent, received = sent1 - sent0, received1 - received0
        stats["sensor"] = {"sent": sent, "received": received, "lost": sent - received}
        stats["processes"] = process_summary(sampler)
        stats["policy_diagnostics"] = observer.latest_diagnostics(policy)
        return {"config": asdict(cfg), **stats}


@contextmanager
def running_system(cfg: LoopConfig, observer_type: type[LoopObserver] = LoopObserver):
    """Nodes started, the observer listening, the first chunk out, CPU burners running; all stopped
    on exit, pass or fail."""
    procs = start_nodes(cfg)
    observer = observer_type(sim_time=cfg.sim_time)
    burners = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(cfg.cpu_burners)]
    try:
        wait_for(lambda: observer.chunks.count() > 0 or any(not p.alive() for p in procs.values()), 120,
                 "the first action chunk")
        raise_if_dead(procs)
        for b in burners:
            b.start()
        yield procs, observer
    finally:
        for b in burners:
            b.kill()
        observer.destroy()
        stop_all(procs.values())


def raise_if_dead(procs: dict[str, NodeProcess]) -> None:
    for name, p in procs.items():
        if not p.alive():
            tail = "\n".join(p.output().splitlines()[-15:])
            raise RuntimeError(f"{name} exited with code {p.proc.returncode}:\n{tail}")


def process_summary(sampler: ProcessSampler) -> dict:
    out = {}
    for name, samples in sampler.samples.items():
        if samples:
            cpu = [c for _, c, _ in samples]
            out[name] = {"cpu_percent_mean": float(np.mean(cpu)), "rss_mb_last": samples[-1][2],
                         "rss_mb_max": max(r for _, _, r in samples)}
    return out


def loop_table(rows: list[dict]) -> str:
    """Async and sync side by side per VLM latency, with the async/sync ratio where it means something."""
    lines = ["| VLM latency | sensor Hz | mode | chunks/s | actions/s | period p50 / p99 / max ms | "
             "period error p99 ms | end-to-end p50 / p99 ms | feature age p50 / max s | sensor sent / lost | "
             "CPU % / RSS MB (policy nodes) |", "|" + "---|" * 11]
    for r in rows:
        c = r["config"]
        cpu = " + ".join(f"{v['cpu_percent_mean']:.0f} % / {v['rss_mb_last']:.0f}" for k, v in r["processes"].items()
                         if k != "synthetic_sources")
        p, e, a = r["period_ms"], r["end_to_end_ms"], r["feature_age_s"]
        lines.append(f"| {c['vlm_latency']} s | {c['sensor_hz']:.0f} | {c['mode']} | {r['chunks_per_s']:.2f} | "
                     f"{r['actions_per_s']:.1f} | {p['p50']:.1f} / {p['p99']:.1f} / {p['max']:.1f} | "
                     f"{r['period_error_ms']['p99']:.2f} | {e['p50']:.2f} / {e['p99']:.2f} | "
                     f"{a['p50']:.2f} / {a['max']:.2f} | {r['sensor']['sent']} / {r['sensor']['lost']} | {cpu} |")
    ratios = []
    for r in rows:
        c = r["config"]
        if c["mode"] != ASYNC:
            continue
        for s in rows:
            sc = s["config"]
            if sc["mode"] == SYNC and sc["vlm_latency"] == c["vlm_latency"] and sc["sensor_hz"] == c["sensor_hz"]:
                ratios.append(f"VLM latency {c['vlm_latency']} s: async {r['actions_per_s']:.1f} actions/s vs "
                              f"sync {s['actions_per_s']:.1f} actions/s = "
                              f"{r['actions_per_s'] / max(s['actions_per_s'], 1e-9):.1f}x")
    return "\n".join([*lines, "", *ratios])
