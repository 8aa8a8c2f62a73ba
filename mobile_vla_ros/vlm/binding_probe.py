"""Is a stand-in VLM's weak part where the objects are, or which one the instruction names? A probe on the
images the closed loop decides its first move on.

The standard set's failures at 1.5 s start with a wrong first reading: the robot faces another object and
the feature points at it, the target 19-38 deg aside (docs/closed_loop_experiments.md). Grounding teaches the
stand-in two things: its pooled feature (the one vlm_node publishes; instruction and image) the instructed
target's bearing, and the mean of its image latents (image only) every colour-and-shape kind's place.
This fits a linear readout of each (ridge regression to the grounding's own labels, as `twin_probe` does)
on grounding frames, and scores both on the start images of evaluation seeds: the pooled feature's reading
of the target against the image latents' reading of the slot of the kind the instruction names. Where the
slot is right and the pooled reading wrong, the stand-in sees where the target is but does not bind the
instruction to it.

  python -m mobile_vla_ros.vlm.binding_probe --vlm models/default/vlm [--tasks 400] [--seeds 1000-1159]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ..sim import parse_seeds
from ..sim.world import SimConfig, SimRobot, Task, sample_task, wrap_angle
from .grounding import KINDS, GroundingRecipe, grounding_label, load_stand_in, render_frames
from .twin_probe import PROBE_SEED, ridge_readout

ASIDE = math.radians(15)  # "the target aside": where the failing first readings start


def start_frames(seeds: list[int]) -> list[tuple]:
    """(rgb, instruction, shape-slot label, task) of each evaluation seed's start image, standard set (whose
    starts show every object; the hard set's targets start out of view)."""
    frames = []
    for seed in seeds:
        task = sample_task(seed, SimConfig.for_evaluation("standard"))
        with SimRobot(task) as robot:
            frames.append((robot.render(), task.instruction, grounding_label(robot, shape_slots=True), task))
    return frames


def instructed_slot_bearing(kinds: np.ndarray, task: Task) -> float:
    """The bearing (rad) the per-kind part of a shape-slot label (or its readout) gives the kind the task's
    instruction names; NaN where it says that kind is not in view."""
    target = task.target_object
    visible, sine = kinds[3 * KINDS.index((target.color, target.shape)):][:2]
    if visible < 0.5:
        return math.nan
    return math.asin(min(1.0, max(-1.0, sine / visible)))


def feature_pairs(vlm_dir: Path, frames: list) -> tuple[np.ndarray, np.ndarray]:
    """([N, F] pooled features, [N, D] mean image latents) of each frame with its instruction (CPU, FP32)."""
    import torch

    extractor = load_stand_in(vlm_dir)
    pooled, latents = [], []
    with torch.no_grad():
        for rgb, instruction, *_ in frames:
            inputs = extractor.prepare([rgb], instruction)  # once for both readouts
            pooled.append(extractor.forward(**inputs)[0].cpu().numpy())  # what extract() publishes for one view
            latents.append(extractor.image_latents(inputs["pixel_values"]).mean(dim=1).float()[0].numpy())
    return np.stack(pooled), np.stack(latents)


def _scores(read: np.ndarray, true: np.ndarray) -> dict:
    """Bearing errors (a reading of NaN, "not in view", counts as 180 deg) on all frames and on those with
    the target aside."""
    error = np.where(np.isnan(read), math.pi, np.abs(wrap_angle(read - true)))
    aside = np.abs(true) > ASIDE
    return {"bearing_mae_deg": math.degrees(float(error.mean())), "over_15_deg": float((error > ASIDE).mean()),
            "aside": {"frames": int(aside.sum()), "bearing_mae_deg": math.degrees(float(error[aside].mean())),
                      "over_15_deg": float((error[aside] > ASIDE).mean()),
                      "side_right": float((np.sign(np.nan_to_num(read[aside])) == np.sign(true[aside])).mean())}}


def probe(vlm_dir: Path, fit: list, starts: list) -> dict:
    """Both readouts of one stand-in, fitted on `fit`, scored on `starts`."""
    pooled, latents = feature_pairs(vlm_dir, fit + starts)
    n = len(fit)
    labels = np.stack([frame[2] for frame in fit])
    target = ridge_readout(pooled[:n], labels[:, :2], pooled[n:])
    kinds = ridge_readout(latents[:n], labels[:, 3:], latents[n:])
    true = np.array([math.atan2(frame[2][0], frame[2][1]) for frame in starts])
    pooled_read = np.arctan2(target[:, 0], target[:, 1])
    slot_read = np.array([instructed_slot_bearing(row, frame[3]) for row, frame in zip(kinds, starts)])
    return {"vlm": str(vlm_dir), "frames": len(starts),
            "pooled": _scores(pooled_read, true), "instructed_slot": _scores(slot_read, true),
            "per_seed": [{"seed": frame[3].seed, "target_deg": math.degrees(t), "pooled_deg": math.degrees(p),
                          "slot_deg": None if math.isnan(s) else math.degrees(s)}
                         for frame, t, p, s in zip(starts, true, pooled_read, slot_read)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.vlm.binding_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", type=Path, nargs="+", required=True,
                    help="stand-in VLM directories (Kosmos-2 architecture)")
    ap.add_argument("--tasks", type=int, default=400,
                    help="seeded grounding tasks to fit the readouts on (4 frames each)")
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1000-1159"),
                    help="evaluation seeds FIRST-LAST or A,B,C")
    ap.add_argument("--workers", type=int, default=1, help="rendering processes")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = ap.parse_args(argv)
    fit = render_frames(args.tasks, 4, PROBE_SEED, args.workers, GroundingRecipe(shape_slots=True))
    starts = start_frames(args.seeds)
    results = [probe(vlm_dir, fit, starts) for vlm_dir in args.vlm]
    print(f"{len(fit)} frames to fit the readouts on; {len(starts)} start images of the standard set "
          f"(seeds {args.seeds[0]}-{args.seeds[-1]}), the target more than 15° aside on "
          f"{results[0]['pooled']['aside']['frames']}\n")
    print("| stand-in | reading | bearing MAE | share over 15° | target aside: MAE | share over 15° | side right |\n"
          "|---|---|---|---|---|---|---|")
    for r in results:
        for name in ("pooled", "instructed_slot"):
            s = r[name]
            aside = s["aside"]
            print(f"| {r['vlm']} | {name.replace('_', ' ')} | {s['bearing_mae_deg']:.1f}° | {s['over_15_deg']:.0%} | "
                  f"{aside['bearing_mae_deg']:.1f}° | {aside['over_15_deg']:.0%} | {aside['side_right']:.0%} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"tasks": args.tasks, "fit_frames": len(fit),
                                        "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
