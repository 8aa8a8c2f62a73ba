"""`mobile-vla-bench closed-loop`: how well the robot is controlled as the VLM gets slower.

For each (VLM latency, vlm_hz) setting, mode and task set, the same held-out seeds are driven
closed loop in sim time by the robot's code (tools/simulation/closed_loop.py): `sync` (every decision
waits for a forward; the VLM runs back to back, up to SYNC_LOOP_VLM_HZ), `sync-at-vlm-hz` (the same
loop given the split's VLM compute: its VLM ticks at the row's vlm_hz; run only when asked),
`async-no-motion` (the two nodes, a model without the motion input) and `async-motion` (the two
nodes, the shipped model with it), and `expert`: the rule the model is trained on, with ground-truth
perception, on the images that VLM delivers (an upper bound: what is left between it and
`async-motion` is perception and imitation error, not latency). Reports success, mean time to
target, path length / straight-line distance, command smoothness (mean |change| of the executed
command per cmd_vel step) and how the failed episodes ended (at another object, in place,
elsewhere); Markdown + JSON + one PNG. Runs are spread over processes. Each mode is also compared
with `sync` episode by episode on the same seeds (`paired_with`): who reached the target, and the
difference in time to target with a bootstrap confidence interval, so that "faster" means measurably
faster and a tie reads as one.
"""

from __future__ import annotations

import multiprocessing
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.params import SIM_POLICY_MODES, SYNC_AT_VLM_HZ

CPU_STAND_IN = "cpu"  # the latency of the shipped stand-in VLM's real forward on this machine
DEFAULT_SETTINGS = ((CPU_STAND_IN, 3.33), (0.3, 3.33), (0.3, 1.0), (1.5, 0.59))
EXPERT = "expert"
TASK_SET_ORDER = ("standard", "hard")
MODES = ("sync", SYNC_AT_VLM_HZ, "async-no-motion", "async-motion", EXPERT)


@dataclass(frozen=True)
class Run:
    task_set: str
    mode: str
    latency: float | str
    vlm_hz: float


def measured_forward_seconds(model_dir: Path, repeats: int = 20) -> float:
    """Median forward of the model's VLM on a sim frame on this machine (the CPU stand-in's latency)."""
    from ...core.model_spec import ModelSpec
    from ...sim.world import SimRobot, sample_task
    from ...vlm.base import ExtractorConfig
    from ...vlm.factory import create_extractor

    spec = ModelSpec.load(model_dir)
    extractor = create_extractor(ExtractorConfig(backend=spec.vlm_backend, pooling=spec.vlm_pooling,
                                                 model_path=str(model_dir / "vlm"), device="cpu", dtype="fp32"))
    task = sample_task(1000)
    with SimRobot(task) as robot:
        frame = robot.render()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        extractor.extract([frame], task.instruction)
        times.append(time.perf_counter() - began)
    return float(np.median(times[2:]))


# In a pool worker: where it announces each finished episode (set by the pool's initialiser).
_episode_done_queue = None


def _run_one(job: tuple[Run, float, list[int], dict[str, str]], on_episode=None) -> dict:
    """One row's episodes for the job's seeds; `on_episode(done, rows)` after each."""
    from ...sim.world import SimConfig
    from ..simulation.closed_loop import LoopConfig, informed_expert_episodes, run_episodes

    run, latency, seeds, models = job
    model = models["no_motion"] if run.mode == "async-no-motion" else models["motion"]
    sim_cfg = SimConfig.for_evaluation(run.task_set)
    began = time.monotonic()
    if run.mode == EXPERT:
        model = "none (ground truth)"
        episodes = informed_expert_episodes(seeds, sim_cfg, latency, run.vlm_hz, on_episode)
    else:
        # async-no-motion and async-motion differ by model only
        cfg = LoopConfig(mode=run.mode if run.mode in SIM_POLICY_MODES else "async", vlm_hz=run.vlm_hz,
                         vlm_latency=latency)
        episodes = run_episodes(seeds, sim_cfg, cfg, Path(model), on_episode)
    return {**asdict(run), "latency_s": latency, "model_dir": model, "episodes": episodes,
            **summarize(episodes), "wall_seconds": time.monotonic() - began}


def summarize(episodes: list[dict]) -> dict:
    ok = [e for e in episodes if e["success"]]

    def mean(key, rows):
        values = [e[key] for e in rows if e[key] is not None]
        return float(np.mean(values)) if values else None

    from ..simulation.closed_loop import OUTCOMES

    failures = {kind: sum(e["outcome"] == kind for e in episodes) for kind in OUTCOMES[1:]}
    return {"successes": len(ok), "episodes_run": len(episodes), "success_rate": len(ok) / max(len(episodes), 1),
            "mean_time_to_target_s": mean("duration", ok), "path_ratio": mean("path_ratio", ok),
            "smoothness": mean("smoothness", episodes), "failures": failures}


def seed_chunks(seeds: list[int], runs: int, workers: int) -> list[list[int]]:
    """`seeds` in consecutive chunks, so that `runs` rows give every worker a job (a few rows of many
    episodes would otherwise leave workers idle while each row runs its episodes one by one)."""
    pieces = min(len(seeds), max(1, -(-workers // max(runs, 1))))
    size = -(-len(seeds) // pieces)
    return [seeds[i:i + size] for i in range(0, len(seeds), size)]


def _init_worker(threads: int, episode_done_queue) -> None:
    """Pool initialiser: `threads` torch threads per worker, so that workers x threads fit the cores, and
    the queue on which each finished episode is announced."""
    import os

    global _episode_done_queue
    _episode_done_queue = episode_done_queue
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


def run_matrix(models: dict[str, str], seeds: list[int], task_sets: list[str], modes: list[str],
               settings: list[tuple], workers: int, progress=None) -> list[dict]:
    """One row per (task set, setting, mode), in that order; with `workers` > 1 the rows' episodes are
    spread over that many processes of cores / workers threads each. `progress(episodes_done,
    episodes_total, rows_done, rows_total)` is called as episodes finish (`rows_done`: the rows complete
    so far, in the order they completed)."""
    forward = measured_forward_seconds(Path(models["motion"])) if any(s[0] == CPU_STAND_IN for s in settings) else 0
    runs = [(Run(task_set, mode, lat, hz), forward if lat == CPU_STAND_IN else float(lat))
            for task_set in task_sets for lat, hz in settings for mode in modes]
    total = len(runs) * len(seeds)
    rows: list[dict] = []
    if workers <= 1:
        for run, latency in runs:
            before = len(rows) * len(seeds)
            on_episode = None if progress is None else (
                lambda done, _, before=before: progress(before + done, total, rows, len(runs)))
            rows.append(_run_one((run, latency, seeds, models), on_episode))
            if progress:
                progress(len(rows) * len(seeds), total, rows, len(runs))
        return rows
    chunks = seed_chunks(seeds, len(runs), workers)
    jobs = [(run, latency, chunk, models) for run, latency in runs for chunk in chunks]
    parts: dict[Run, list[dict]] = {run: [] for run, _ in runs}
    threads = max(1, (multiprocessing.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    episode_done_queue = context.Queue()
    # Episodes done per job: announced one by one while it runs, then its own count once it returns
    # (an announcement can arrive after the result, and is not counted twice).
    done_by_job, returned, reported = [0] * len(jobs), set(), None
    with context.Pool(workers, initializer=_init_worker, initargs=(threads, episode_done_queue)) as pool:
        results = pool.imap_unordered(_run_pooled, enumerate(jobs))
        while len(returned) < len(jobs):
            try:
                index, part = results.next(timeout=0.5)
            except multiprocessing.TimeoutError:
                index, part = None, None
            for announced in _drain(episode_done_queue):
                done_by_job[announced] += announced not in returned
            if part is not None:
                returned.add(index)
                done_by_job[index] = len(part["episodes"])
                run = Run(part["task_set"], part["mode"], part["latency"], part["vlm_hz"])
                parts[run].append(part)
                if len(parts[run]) == len(chunks):
                    rows.append(_joined(parts[run]))
            if progress and (sum(done_by_job), len(rows)) != reported:
                reported = (sum(done_by_job), len(rows))
                progress(reported[0], total, rows, len(runs))
    order = {run: i for i, (run, _) in enumerate(runs)}
    return sorted(rows, key=lambda r: order[Run(r["task_set"], r["mode"], r["latency"], r["vlm_hz"])])


def _run_pooled(indexed_job: tuple[int, tuple]) -> tuple[int, dict]:
    """`_run_one` in a pool worker; each finished episode is announced by the job's index."""
    index, job = indexed_job
    return index, _run_one(job, on_episode=lambda done, rows: _episode_done_queue.put(index))


def _drain(queue) -> list:
    """The items waiting on `queue`, taken off it."""
    import queue as queues

    items = []
    while True:
        try:
            items.append(queue.get_nowait())
        except queues.Empty:
            return items


def _joined(parts: list[dict]) -> dict:
    """One row from the rows of its seed chunks: episodes in seed order, the summary over all of them."""
    episodes = sorted((e for p in parts for e in p["episodes"]), key=lambda e: e["seed"])
    return {**parts[0], "episodes": episodes, **summarize(episodes),
            "wall_seconds": sum(p["wall_seconds"] for p in parts)}


def merged_runs(runs: list[dict]) -> dict:
    """Runs of `mobile-vla-bench closed-loop` as one: their rows in the bench's order (task set, setting
    as first seen, mode), the first run's environment and models, every run's seeds and notes. A row
    (task set, setting, mode) in two runs is an error: which one counts would be a guess."""
    if any(run["rows"] and run.get("models", {}) != runs[0].get("models", {}) for run in runs):
        raise ValueError(f"runs of other models: {[run.get('models') for run in runs]}")
    rows = [row for run in runs for row in run["rows"]]
    keys = [(r["task_set"], r["latency"], r["vlm_hz"], r["mode"]) for r in rows]
    twice = sorted({k for k in keys if keys.count(k) > 1}, key=str)
    if twice:
        raise ValueError(f"rows in more than one run: {twice}")
    settings = list(dict.fromkeys((r["latency"], r["vlm_hz"]) for r in rows))
    rows.sort(key=lambda r: (TASK_SET_ORDER.index(r["task_set"]), settings.index((r["latency"], r["vlm_hz"])),
                             MODES.index(r["mode"])))
    notes = [run["note"] for run in runs if run.get("note")]
    merged = {**runs[0], "rows": rows, "seeds": sorted({s for run in runs for s in run.get("seeds", [])}),
              "wall_seconds": sum(run.get("wall_seconds", 0.0) for run in runs)}
    merged.pop("paired_with_sync", None)
    if notes:
        merged["note"] = "; ".join(notes)
    return merged


PAIRED_BASELINE = "sync"
BOOTSTRAP_RESAMPLES = 10_000
MIN_PAIRS = 5  # episodes both reached, below which no time difference is reported


def paired_with(rows: list[dict], baseline: str = PAIRED_BASELINE, resamples: int = BOOTSTRAP_RESAMPLES,
                seed: int = 0) -> list[dict]:
    """Each row beside the `baseline` row of its task set and setting, over the seeds both ran: how
    many episodes each alone reached the target, and on those both reached, the time difference
    (row - baseline: below zero is faster) as mean, 95 % bootstrap interval of the mean and median,
    the share the row reached sooner, and the baseline's mean time over the row's (`speedup`), all None
    below MIN_PAIRS such episodes. `verdict` reads the interval: "sooner" / "later" when it excludes
    zero, "tie" when it holds it."""
    baselines = {(r["task_set"], r["latency"], r["vlm_hz"]): r for r in rows if r["mode"] == baseline}
    rng = np.random.default_rng(seed)
    compared = []
    for row in rows:
        base = baselines.get((row["task_set"], row["latency"], row["vlm_hz"]))
        if row["mode"] == baseline or base is None:
            continue
        ours = {e["seed"]: e for e in row["episodes"]}
        theirs = {e["seed"]: e for e in base["episodes"]}
        seeds = sorted(ours.keys() & theirs.keys())
        both = [s for s in seeds if ours[s]["success"] and theirs[s]["success"]]
        entry = {key: row[key] for key in ("task_set", "latency", "latency_s", "vlm_hz", "mode")}
        entry.update(baseline=baseline, episodes=len(seeds), both_reached=len(both),
                     only_mode_reached=sum(ours[s]["success"] and not theirs[s]["success"] for s in seeds),
                     only_baseline_reached=sum(theirs[s]["success"] and not ours[s]["success"] for s in seeds))
        entry.update(_time_difference(np.array([ours[s]["duration"] for s in both]),
                                      np.array([theirs[s]["duration"] for s in both]), rng, resamples))
        compared.append(entry)
    return compared


def _time_difference(ours: np.ndarray, theirs: np.ndarray, rng: np.random.Generator, resamples: int) -> dict:
    if len(ours) < MIN_PAIRS:  # unknown, not zero: too few episodes to compare
        return {"time_diff_mean_s": None, "time_diff_ci95_s": None, "time_diff_median_s": None,
                "faster_share": None, "speedup": None, "verdict": None}
    diff = ours - theirs
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    low, high = (float(x) for x in np.percentile(means, [2.5, 97.5]))
    verdict = "sooner" if high < 0 else "later" if low > 0 else "tie"
    return {"time_diff_mean_s": float(diff.mean()), "time_diff_ci95_s": [low, high],
            "time_diff_median_s": float(np.median(diff)), "faster_share": float(np.mean(diff < 0)),
            "speedup": float(theirs.mean() / ours.mean()), "verdict": verdict}


def _latency_label(row: dict) -> str:
    return f"CPU stand-in ({row['latency_s'] * 1e3:.0f} ms)" if row["latency"] == CPU_STAND_IN \
        else f"{row['latency_s']:.1f} s"


def paired_table(compared: list[dict]) -> str:
    lines = ["| task set | VLM latency | vlm_hz | mode vs sync | reached: both / only mode / only sync | "
             "time to target, mode - sync: mean [95 % CI] s | median s | mode sooner | sync time / mode time | "
             "time verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for c in compared:
        interval = "–" if c["time_diff_ci95_s"] is None else \
            f"{c['time_diff_mean_s']:+.3f} [{c['time_diff_ci95_s'][0]:+.3f}, {c['time_diff_ci95_s'][1]:+.3f}]"
        sooner = "–" if c["faster_share"] is None else f"{100 * c['faster_share']:.0f} %"
        lines.append(f"| {c['task_set']} | {_latency_label(c)} | {c['vlm_hz']} | {c['mode']} | "
                     f"{c['both_reached']} / {c['only_mode_reached']} / {c['only_baseline_reached']} | {interval} | "
                     f"{_fmt(c['time_diff_median_s'], '+.3f')} | {sooner} | {_fmt(c['speedup'], '.2f')} | "
                     f"{c['verdict'] or '–'} |")
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    lines = ["| task set | VLM latency | vlm_hz | mode | success | mean time to target s | path / straight line | "
             "mean \\|Δcmd\\| per step | failed: wrong object / in place / elsewhere |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task_set']} | {_latency_label(r)} | {r['vlm_hz']} | {r['mode']} | "
                     f"{r['successes']}/{r['episodes_run']} ({100 * r['success_rate']:.0f} %) | "
                     f"{_fmt(r['mean_time_to_target_s'], '.1f')} | {_fmt(r['path_ratio'], '.2f')} | "
                     f"{_fmt(r['smoothness'], '.4f')} | {' / '.join(str(n) for n in r['failures'].values())} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task_sets = sorted({r["task_set"] for r in rows}, key=TASK_SET_ORDER.index)
    fig, axes = plt.subplots(2, len(task_sets), figsize=(5.5 * len(task_sets), 7), squeeze=False)
    for col, task_set in enumerate(task_sets):
        for mode in MODES:
            sel = [r for r in rows if r["task_set"] == task_set and r["mode"] == mode]
            if not sel:
                continue
            labels = [f"{r['latency_s']:.2f} s\n{r['vlm_hz']} Hz" for r in sel]
            x = np.arange(len(sel))
            axes[0, col].plot(x, [100 * r["success_rate"] for r in sel], "o-", label=mode)
            axes[1, col].plot(x, [np.nan if r["mean_time_to_target_s"] is None else r["mean_time_to_target_s"]
                                  for r in sel], "o-", label=mode)
            for ax in axes[:, col]:
                ax.set_xticks(x, labels, fontsize=8)
        axes[0, col].set_title(f"{task_set} task set")
        axes[0, col].set_ylabel("success (%)")
        axes[0, col].set_ylim(-5, 105)
        axes[1, col].set_ylabel("mean time to target (s)")
        axes[1, col].set_xlabel("VLM latency / vlm_hz")
        axes[0, col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
