"""Does a stand-in VLM's feature point at the instructed object or at its same-colour twin? A probe of the
feature vlm_node publishes, on enough frames to rank stand-ins.

A grounding run scores the twin confusion on the few validation frames that happen to show both objects
(22-35 of 700), and two seeds of one recipe gave 26 % and 59 % there (docs/closed_loop_experiments.md).
This renders grounding frames of tasks no grounding run uses (`grounding.render_frames`), fits a linear
readout of the instructed target's bearing (ridge regression to its sine and cosine, the form of the
grounding's own head) to each stand-in's pooled feature on frames of standard and hard tasks, and scores
it on frames of other hard tasks that look between the target and its twin (as `--twin-views` renders
them), those that show both: how often the bearing read lies nearer the twin than the target, and its
error. The same readout is also scored where no twin is in view (frames of a third set of tasks that
show the target: standard tasks, and hard tasks without the twin in view): a recipe that tells the twin
apart may read the target less well elsewhere. Every stand-in given is scored on the same frames.

  python -m mobile_vla_ros.vlm.twin_probe --vlm models/default/vlm OTHER/vlm [--tasks 600] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from .grounding import GroundingRecipe, angle_error, is_hard_task, load_stand_in, render_frames, twin_confusion

# Grounding runs render tasks FIRST_TASK_SEED + seed x 100,000 + i for seeds 0, 1, ... (validation: seed + 1);
# the probe's seeds are far from any run's.
PROBE_SEED = 70


def render_probe_frames(tasks: int, workers: int = 1) -> tuple[list, dict[str, list]]:
    """(frames the readout is fitted on: 4 per task, half of the tasks hard; frame sets it is scored on:
    "twin", those of 9 per task that show both the target and its twin, most of them from the hard tasks'
    3 between the two; "standard" and "hard, no twin", those of 4 per task of another half as many tasks
    that show the target and no twin)."""
    from ..sim.world import SimConfig, in_view

    half_fov = SimConfig().half_fov

    def target_in_view(frame):
        return in_view(target_bearing(frame), half_fov)

    fit = render_frames(tasks, 4, PROBE_SEED, workers)
    twin = render_frames(tasks, 9, PROBE_SEED + 1, workers, GroundingRecipe(twin_views=True))
    per_task = 4
    other = render_frames(max(2, tasks // 2), per_task, PROBE_SEED + 2, workers)  # in task order
    return fit, {"twin": [f for f in twin if not math.isnan(f[3]) and target_in_view(f)],
                 "standard": [f for k, f in enumerate(other)
                              if not is_hard_task(k // per_task) and target_in_view(f)],
                 "hard, no twin": [f for k, f in enumerate(other)
                                   if is_hard_task(k // per_task) and math.isnan(f[3]) and target_in_view(f)]}


def target_bearing(frame: tuple) -> float:
    """The instructed target's bearing in a grounding frame, from its label's sine and cosine."""
    return math.atan2(frame[2][0], frame[2][1])


def pooled_features(vlm_dir: Path, frames: list) -> np.ndarray:
    """[N, F] the stand-in's pooled feature of each frame with its instruction (CPU, FP32)."""
    extractor = load_stand_in(vlm_dir)
    return np.stack([extractor.extract([rgb], instruction)[0] for rgb, instruction, *_ in frames])


def ridge_readout(x_fit: np.ndarray, y_fit: np.ndarray, x: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """What a ridge regression fitted to standardised (x_fit, y_fit) reads from x."""
    mean, std = x_fit.mean(0), x_fit.std(0) + 1e-6
    a = np.hstack([(x_fit - mean) / std, np.ones((len(x_fit), 1))])
    weights = np.linalg.solve(a.T @ a + alpha * np.eye(a.shape[1]), a.T @ y_fit)
    return np.hstack([(x - mean) / std, np.ones((len(x), 1))]) @ weights


def probe(vlm_dir: Path, fit: list, scored: dict[str, list]) -> dict:
    """The stand-in's bearing readout on each set of `scored` frames: its errors (degrees), and on the
    "twin" set how often it lies nearer the twin."""
    import torch

    frames = [frame for group in scored.values() for frame in group]
    features = pooled_features(vlm_dir, fit + frames)
    read = ridge_readout(features[:len(fit)], np.stack([frame[2][:2] for frame in fit]), features[len(fit):])
    predicted = torch.as_tensor(np.arctan2(read[:, 0], read[:, 1]))
    target = torch.as_tensor([target_bearing(frame) for frame in frames], dtype=torch.float64)
    error = angle_error(predicted, target)
    result: dict = {"vlm": str(vlm_dir)}
    start = 0
    for name, group in scored.items():
        part = slice(start, start + len(group))
        start += len(group)
        result[name] = {"frames": len(group), "bearing_mae_deg": math.degrees(float(error[part].mean())),
                        "over_15_deg": float((error[part] > math.radians(15)).float().mean()),
                        "bearing_mae_deg_zero": math.degrees(float(target[part].abs().mean()))}
        if name == "twin":
            twin = torch.as_tensor([frame[3] for frame in group])
            result[name]["nearer_the_twin"] = twin_confusion(predicted[part], error[part], twin)["rate"]
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.vlm.twin_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", type=Path, nargs="+", required=True,
                    help="stand-in VLM directories (Kosmos-2 architecture)")
    ap.add_argument("--tasks", type=int, default=600, help="seeded tasks of each of the two frame sets")
    ap.add_argument("--workers", type=int, default=1, help="rendering processes")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = ap.parse_args(argv)
    fit, scored = render_probe_frames(args.tasks, args.workers)
    results = [probe(vlm_dir, fit, scored) for vlm_dir in args.vlm]
    print(f"{len(fit)} frames to fit the readout on; frames scored: "
          + ", ".join(f"{len(group)} {name}" for name, group in scored.items()) + "\n")
    print("| stand-in | twin in view: nearer the twin | bearing MAE (predicting 0) | standard: bearing MAE | "
          "share over 15° | hard, no twin: bearing MAE | share over 15° |\n|---|---|---|---|---|---|---|")
    for r in results:
        twin, standard, hard = r["twin"], r["standard"], r["hard, no twin"]
        print(f"| {r['vlm']} | {twin['nearer_the_twin']:.0%} of {twin['frames']} | {twin['bearing_mae_deg']:.1f}° "
              f"({twin['bearing_mae_deg_zero']:.1f}°) | {standard['bearing_mae_deg']:.1f}° | "
              f"{standard['over_15_deg']:.0%} | {hard['bearing_mae_deg']:.1f}° | {hard['over_15_deg']:.0%} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"tasks": args.tasks, "fit_frames": len(fit), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
