"""`mobile-vla-bringup --sim`: the closed-loop job. Starts sim_node, vlm_node and action_expert_node
(separate processes, the same YAML as the launch file with use_sim:=true), runs `--episodes`
seeded episodes with a progress bar, reads the nodes' /diagnostics, then drives the same episodes
with a zero-action and a random-action baseline (in-process, no camera needed) and writes a report:
report.json and trajectories.png (every driven path over the arena)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

from ...core.params import SIM_POLICY_MODES, SYNC_LOOP_VLM_HZ
from ...sim.world import SimConfig
from ..cli import progress_bar
from ..ros_observer import SUMMARY_KEYS
from .processes import NodeProcess, yaml_params

POLICY_NODES = ("vlm_node", "action_expert_node")
SYNC_NODE = "sync_baseline_node"


def sync_node_params(mode: str, params_files: list[Path]) -> dict:
    """sync_baseline_node's parameters: both nodes' from the same files, a decision per forward (no
    action_hz), and its VLM back to back up to SYNC_LOOP_VLM_HZ (sync) or at the files' vlm_hz, the split's
    VLM compute (sync-at-vlm-hz)."""
    params = yaml_params(params_files, POLICY_NODES)
    params.pop("action_hz", None)
    if mode == "sync":
        params["vlm_hz"] = SYNC_LOOP_VLM_HZ
    return params


def policy_processes(mode: str, params_files: list[Path], namespace: str, log_level: str,
                     out: Path) -> dict[str, NodeProcess]:
    """async: vlm_node + action_expert_node; sync, sync-at-vlm-hz: one sync_baseline_node
    (`sync_node_params`: its decisions wait for each forward)."""
    if mode not in SIM_POLICY_MODES:
        raise ValueError(f"mode: expected one of {', '.join(SIM_POLICY_MODES)}, got {mode!r}")
    if mode == "async":
        return {name: NodeProcess(name, params_files=params_files, namespace=namespace, log_level=log_level,
                                  log_dir=out) for name in POLICY_NODES}
    return {SYNC_NODE: NodeProcess("tools.bringup.sync_baseline", sync_node_params(mode, params_files),
                                   node_name=SYNC_NODE, namespace=namespace, log_level=log_level, log_dir=out)}


def run_closed_loop(params_files: list[Path], episodes: int, seed: int, out: Path, namespace: str = "",
                    log_level: str = "info", time_limit: float | None = None, mode: str = "async",
                    task_set: str = "standard") -> dict:
    """Run the nodes against the simulator for `episodes` episodes; return the report dict."""
    from std_msgs.msg import String

    from ...sim.messages import TOPICS
    from ..ros_observer import Observer

    out.mkdir(parents=True, exist_ok=True)
    sim_params = {"seed": seed, "episodes": episodes, "task_set": task_set}
    if time_limit is not None:
        sim_params["time_limit"] = time_limit
    observer = Observer("sim_job_observer", own_context=True)
    topic = (f"/{namespace.strip('/')}/" if namespace else "") + TOPICS["episode_result"]
    results = observer.record(String, topic, 100, lambda msg: json.loads(msg.data))
    observer.diagnostics()
    procs = policy_processes(mode, params_files, namespace, log_level, out)
    procs["sim_node"] = NodeProcess("sim_node", params=sim_params, params_files=params_files, namespace=namespace,
                                    log_level=log_level, log_dir=out)
    began = time.monotonic()
    limit = time_limit or 20.0
    deadline = began + 120 + episodes * (limit + 5) * 2  # a generous bound against a stuck system
    failure = None
    diag: dict[str, dict] = {}
    try:
        while results.count() < episodes:
            dead = [n for n, p in procs.items() if not p.alive()]
            if dead:
                failure = f"{dead[0]} exited with code {procs[dead[0]].proc.returncode}"
                break
            if time.monotonic() > deadline:
                failure = f"timed out after {time.monotonic() - began:.0f} s with {results.count()} episodes done"
                break
            done = [r for _, r in results.since(0.0)]
            successes = sum(r["success"] for r in done)
            progress_bar(f"closed loop: {len(done)}/{episodes} episodes, {successes} successes", len(done) / episodes)
            time.sleep(0.5)
        diag = {n: {k: observer.latest_diagnostics(n).get(k) for k in keys} for n, keys in SUMMARY_KEYS.items()
                if n in procs}
    finally:
        for name in sorted(procs, key=lambda n: n != "sim_node"):  # the robot first, the policy's final zero last
            procs[name].stop()
        observer.destroy()
    print()
    episodes_run = sorted((r for _, r in results.since(0.0)), key=lambda r: r["episode"])
    if failure:
        tails = {n: p.output()[-1500:] for n, p in procs.items()}
        raise RuntimeError(f"closed loop failed: {failure}\n" + "\n".join(f"--- {n}:\n{t}" for n, t in tails.items()))
    return {"episodes": episodes_run, "diagnostics": diag, "wall_seconds": time.monotonic() - began}


def baselines(episodes: list[dict], cfg: SimConfig) -> dict[str, list[dict]]:
    from ...sim.episode import run_baseline
    from ...sim.world import sample_task

    return {policy: [run_baseline(sample_task(e["seed"], cfg), policy, cfg).to_dict() for e in episodes]
            for policy in ("zero", "random")}


def summarize(report: dict) -> str:
    def rate(rows):
        wins = sum(r["success"] for r in rows)
        return f"{wins}/{len(rows)} ({100 * wins / max(len(rows), 1):.0f} %)"

    policy = report["episodes"]
    succeeded = [r["duration"] for r in policy if r["success"]]
    lines = ["", "| policy | success | mean time to target (s) |", "|---|---|---|",
             f"| model, {report.get('mode', 'async')} (closed loop, ROS nodes) | {rate(policy)} | "
             f"{(sum(succeeded) / len(succeeded)) if succeeded else float('nan'):.1f} |"]
    for name, rows in report["baselines"].items():
        lines.append(f"| {name}-action baseline | {rate(rows)} | - |")
    lines += ["", "| node | measured |", "|---|---|"]
    for node, values in report["diagnostics"].items():
        lines.append(f"| {node} | " + ", ".join(f"{k} {v}" for k, v in values.items()) + " |")
    return "\n".join(lines)


def plot_trajectories(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ...sim.world import COLORS

    rows = report["episodes"]
    cols = min(5, max(1, len(rows)))
    n_rows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(3 * cols, 3 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, r in zip(axes.flat, rows):
        ax.set_axis_on()
        for i, o in enumerate(r["objects"]):
            ax.add_patch(plt.Circle((o["x"], o["y"]), o["radius"], color=COLORS[o["color"]],
                                    ec="black" if i == r["target"] else "none", lw=2))
        xs, ys = zip(*r["path"])
        ax.plot(xs, ys, color="tab:green" if r["success"] else "tab:red", lw=1.5)
        ax.plot(xs[0], ys[0], "ko", ms=3)
        ax.set_aspect("equal")
        ax.set_title(f"seed {r['seed']}: {'ok' if r['success'] else 'fail'} {r['duration']:.1f} s\n"
                     f"{r['instruction']}", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def sim_job(params_files: list[Path], episodes: int, seed: int, out: Path, namespace: str = "",
            log_level: str = "warn", time_limit: float | None = None, mode: str = "async",
            task_set: str = "standard") -> dict:
    cfg = SimConfig.for_evaluation(task_set, time_limit)
    report = run_closed_loop(params_files, episodes, seed, out, namespace, log_level, cfg.time_limit, mode, task_set)
    report["baselines"] = baselines(report["episodes"], cfg)
    report["mode"], report["task_set"] = mode, task_set
    rows = report["episodes"]
    report["success_rate"] = sum(r["success"] for r in rows) / max(len(rows), 1)
    report["baseline_success_rate"] = {k: sum(r["success"] for r in v) / max(len(v), 1)
                                       for k, v in report["baselines"].items()}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot_trajectories(report, out / "trajectories.png")
    print(summarize(report))
    print(f"\nwrote {out}/report.json and {out}/trajectories.png ({report['wall_seconds']:.0f} s closed loop)")
    return report
