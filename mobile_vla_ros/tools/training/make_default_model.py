"""Produce models/default (and the ablation models/no_motion) from scratch with fixed seeds:

  python -m mobile_vla_ros.tools.training.make_default_model --out models/default [--device cuda]

1. the stand-in VLM: a tiny Kosmos-2 (patch 16, 64-dim; `--vlm-size`) whose resampler attends to every
   image token, built with `trainable_init`, grounding-pretrained on 28,000 seeded renders of standard and
   hard tasks, instructions with the training paraphrases, the hard frames that show the target's
   same-colour twin also instructed with the twin, every standard frame also instructed with each other
   object in view, and the image latents asked for each colour-and-shape kind's place (vlm/grounding.py
   --full-resampler --shape-slots --twin-pairs in-view --other-pairs: the recipe whose features tell the
   target from its twin and bind the instruction to the object it names; 8 min on one H200 with
   MUJOCO_GL=egl and 16 cores, hours on 2 CPU cores), grounding seed 2 (`--vlm-seed`), saved to OUT/vlm;
   `--vlm DIR` uses an already grounded one instead; `--no-vlm-other-pairs` grounds the stand-in shipped
   until 2026-12-04, `--no-vlm-full-resampler --no-vlm-shape-slots --vlm-twin-pairs none
   --no-vlm-other-pairs` the one before it, `--vlm-axis-views` adds views straight at another object
   (measured, not shipped);
2. mobile-vla-record-sim: expert episodes of both task sets, seeds 0..N-1 for training and 900.. for
   validation (`mobile-vla-bringup --sim` evaluates on seeds from 1000, renders use 2000+: never trained
   on), in parallel processes, phrased with the training paraphrases too; the base executes the expert's
   command for a state up to 1.5 s old (as a policy on stale images drives) plus correlated noise, while
   the label is the expert's command for the current state; the hard set's training episodes are joined
   by as many driven by the image-informed rule (seeds from 300; `--also-informed-task-sets ''`: none;
   `--informed-task-sets hard`: those only);
3. mobile-vla-train on those bags with that VLM for 10 epochs of a cosine schedule: the motion since the
   image as a third input, feature ages drawn uniformly over 0-3.5 s (every deployment from the CPU
   stand-in at 3.33 Hz to a 1.5 s VLM at 0.59 Hz, whose features are up to 3.2 s old), labels from the
   expert that knows only the sample's image and the motion since it (`--labels sim-expert`), a quarter
   of each batch from rendered views of 3,500 more scenes (`--scene-tasks`), and the geometry head, a
   supervised estimate of where the image showed the target (`--no-geometry-head`: the model shipped
   until 2026-12-05, with `--scene-tasks 0 --epochs 30`; `--turn-augment`: samples turned in place, and
   `--mode-gate`: steer and search heads picked by a gate, measured, not shipped) -> OUT; the same
   without the motion input and the geometry head, which needs it -> --no-motion-out (the closed-loop
   benchmark's ablation).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from ...vlm.grounding import TWIN_PAIRS, GroundingRecipe, StandInSize
from .train import ACTION_LOSSES

VAL_SEED = 900
# Training episodes driven by the image-informed rule use their own seeds (a work directory of its own).
INFORMED_SEED = 300
# The grounding seed of the shipped stand-in: of seeds 0, 1 and 2 of the twin-pair recipe the one whose features
# tell the target from its twin and still read the standard set's scenes; with other pairs, of seeds 2 and 3 the
# one whose published feature reads the standard starts best (docs/sim/binding_probe_other_pairs_2core.md).
SHIPPED_VLM_SEED = 2
SHIPPED_BOTH_DRIVERS = ("hard",)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.tools.training.make_default_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    ap.add_argument("--work", type=Path, default=Path("default_model_work"), help="bags and intermediate files")
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--val-episodes", type=int, default=30)
    ap.add_argument("--vlm", type=Path, default=None, help="an already grounded stand-in VLM directory")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="for grounding")
    ap.add_argument("--grounding-tasks", type=int, default=3500)
    ap.add_argument("--grounding-epochs", type=int, default=40)
    ap.add_argument("--vlm-size", type=StandInSize.parse, default=StandInSize(),
                    help="stand-in VLM WIDTHxLAYERSxPATCHxTOKENS (default %(default)s)")
    ap.add_argument("--vlm-full-resampler", action=argparse.BooleanOptionalAction, default=True,
                    help="the stand-in's resampler attends to every image token, as shipped (--no-...: causally, "
                         "the recipe shipped before)")
    ap.add_argument("--vlm-shape-slots", action=argparse.BooleanOptionalAction, default=True,
                    help="grounding: the image latents' labels per colour and shape, as shipped (vlm/grounding.py "
                         "--shape-slots; --no-...: per colour)")
    ap.add_argument("--vlm-twin-pairs", choices=("none", *TWIN_PAIRS[1:]), default="in-view",
                    help="grounding: hard frames (all, or those with the twin in view, as shipped) also instructed "
                         "with the twin (vlm/grounding.py --twin-pairs)")
    ap.add_argument("--vlm-axis-views", action=argparse.BooleanOptionalAction, default=False,
                    help="grounding: a third of the standard tasks' frames look straight at another object "
                         "(vlm/grounding.py --axis-views; measured, not shipped)")
    ap.add_argument("--vlm-other-pairs", action=argparse.BooleanOptionalAction, default=True,
                    help="grounding: standard frames also instructed with each other object in view, as shipped "
                         "(vlm/grounding.py --other-pairs)")
    ap.add_argument("--vlm-shape-steps", type=int, default=0,
                    help="steps of the stand-in tower's shape stage before its grounding (vlm/shape_stage.py); "
                         "0: none")
    ap.add_argument("--vlm-shape-scenes", type=int, default=1000, help="hard scenes of the shape stage")
    ap.add_argument("--vlm-shape-views", type=int, default=8, help="far views per scene of the shape stage")
    ap.add_argument("--epochs", type=int, default=10,
                    help="action-expert epochs (the cosine schedule's length; 10 as shipped, 30 before 2026-12-05)")
    ap.add_argument("--staleness", default="0.0,3.5", help="feature ages trained on (s): the whole deployment range")
    ap.add_argument("--expert-delay-max", type=float, default=1.5)
    ap.add_argument("--informed-task-sets", type=_task_sets, default="",
                    help="task sets whose training episodes are driven by the image-informed rule on images up to "
                         "--informed-latency-max s late (mobile-vla-record-sim --informed-latency-max; seeds from "
                         f"{INFORMED_SEED}) instead of the delayed memory expert; default: none (the shipped model)")
    ap.add_argument("--also-informed-task-sets", type=_task_sets, default=None,
                    help="task sets whose training episodes driven by the delayed memory expert are joined by as many "
                         f"driven by the image-informed rule (both drivers; default: {','.join(SHIPPED_BOTH_DRIVERS)}, "
                         "as shipped, less those in --informed-task-sets; '' for none)")
    ap.add_argument("--informed-latency-max", type=float, default=1.5)
    ap.add_argument("--loss", default="mse", choices=sorted(ACTION_LOSSES),
                    help="mobile-vla-train --loss for both models (default %(default)s, as shipped; l1: measured, "
                         "not shipped)")
    ap.add_argument("--labels", default="sim-expert", choices=["recorded", "sim-expert"],
                    help="mobile-vla-train --labels: the expert with the information of each sample's image")
    ap.add_argument("--sensor-noise", type=float, default=0.0, metavar="SCALE",
                    help="mobile-vla-train --sensor-noise for both models: fresh sensor noise on every training "
                         "window, SCALE times the streams' own; default 0: the shipped models (1: measured, not "
                         "shipped)")
    ap.add_argument("--turn-augment", type=float, default=0.0, metavar="FRACTION",
                    help="mobile-vla-train --turn-augment for the model with the motion input (the ablation "
                         "without it cannot carry a turn); default 0: the shipped model")
    ap.add_argument("--turn-augment-range", default=None, metavar="LO,HI",
                    help="mobile-vla-train --turn-augment-range (rad); default: mobile-vla-train's")
    ap.add_argument("--geometry-head", action=argparse.BooleanOptionalAction, default=True,
                    help="mobile-vla-train --geometry-head for the model with the motion input, as shipped (the "
                         "ablation without it cannot move the estimate)")
    ap.add_argument("--mode-gate", action="store_true",
                    help="mobile-vla-train --mode-gate for the model with the motion input: steer and search heads "
                         "picked by a gate on whether the image shows the target")
    ap.add_argument("--scene-tasks", type=int, default=3500, metavar="N",
                    help="mobile-vla-train --scene-tasks for both models: a share of each batch reads the features "
                         "of rendered views of N more seeded tasks (default %(default)s, as shipped; 0: none)")
    ap.add_argument("--scene-fraction", type=float, default=0.25, help="mobile-vla-train --scene-fraction")
    ap.add_argument("--no-motion-out", default="models/no_motion",
                    help="the same model without the motion input ('' to skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vlm-seed", type=int, default=SHIPPED_VLM_SEED,
                    help="the stand-in's initialisation and batch order in grounding (default: %(default)s, as "
                         "shipped); its renders follow --seed")
    return ap


def _task_sets(value: str) -> tuple[str, ...]:
    from ...sim.world import TASK_SETS

    names = tuple(v for v in value.split(",") if v)
    unknown = [v for v in names if v not in TASK_SETS]
    if unknown:
        raise argparse.ArgumentTypeError(f"expected task sets from {', '.join(TASK_SETS)}, got {', '.join(unknown)}")
    return names


def _stand_in(args) -> dict:
    """The stand-in VLM's size and grounding recipe, as build_grounded_vlm takes them."""
    return {"size": replace(args.vlm_size, resampler_causal=not args.vlm_full_resampler),
            "recipe": GroundingRecipe(shape_slots=args.vlm_shape_slots,
                                      twin_pairs="" if args.vlm_twin_pairs == "none" else args.vlm_twin_pairs,
                                      axis_views=args.vlm_axis_views, other_pairs=args.vlm_other_pairs)}


def _training_drivers(task_set: str, args) -> tuple[str, ...]:
    """Who drives the base in a task set's training episodes: the delayed memory expert, the
    image-informed rule, or both (one recording each)."""
    if task_set in args.informed_task_sets:
        return ("informed",)
    return ("memory", "informed") if task_set in args.also_informed_task_sets else ("memory",)


def _record_args(split: str, driver: str, args) -> list[str]:
    """mobile-vla-record-sim arguments of one split driven by `driver` (validation: always the memory expert)."""
    if split == "val":
        return ["--seed", str(VAL_SEED), "--episodes", str(args.val_episodes),
                "--expert-delay-max", str(args.expert_delay_max)]
    if driver == "informed":
        return ["--seed", str(INFORMED_SEED + args.seed), "--episodes", str(args.episodes),
                "--informed-latency-max", str(args.informed_latency_max)]
    return ["--seed", str(args.seed), "--episodes", str(args.episodes),
            "--expert-delay-max", str(args.expert_delay_max)]


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with the drivers of each task set resolved (the shipped both-driver sets unless given)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.also_informed_task_sets is None:
        args.also_informed_task_sets = tuple(t for t in SHIPPED_BOTH_DRIVERS if t not in args.informed_task_sets)
    both = set(args.informed_task_sets) & set(args.also_informed_task_sets)
    if both:
        parser.error(f"{', '.join(sorted(both))}: in --informed-task-sets (informed driver only) and "
                     f"--also-informed-task-sets (both drivers); give each task set one of them")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from ...sim.world import TASK_SETS
    from ...vlm.grounding import build_grounded_vlm
    from ..simulation import record_sim
    from . import train

    vlm_dir = args.out / "vlm"
    if args.vlm is not None:
        if args.vlm.resolve() != vlm_dir.resolve():
            shutil.rmtree(vlm_dir, ignore_errors=True)
            shutil.copytree(args.vlm, vlm_dir)
    else:
        metrics = build_grounded_vlm(vlm_dir, args.grounding_tasks, args.grounding_epochs,
                                     args.vlm_seed, args.device,
                                     render_seed=args.seed,
                                     per_task=8, batch=256 if args.device == "cuda" else 64,
                                     workers=min(14, os.cpu_count() or 1),
                                     **_stand_in(args),
                                     shape_steps=args.vlm_shape_steps, shape_scenes=args.vlm_shape_scenes,
                                     shape_views=args.vlm_shape_views)
        print(f"stand-in VLM -> {vlm_dir}: {metrics}")
    bags: dict[str, list[str]] = {"train": [], "val": []}
    for task_set in TASK_SETS:
        for split, drivers in (("train", _training_drivers(task_set, args)), ("val", ("memory",))):
            for driver in drivers:
                out = args.work / f"{split}_{task_set}{'_informed' if driver == 'informed' else ''}"
                if record_sim.main([*_record_args(split, driver, args), "--out", str(out), "--task-set", task_set,
                                    "--paraphrases", "--workers", str(os.cpu_count() or 1)]) != 0:
                    return 1
                bags[split].append(str(out))
    common = ["--bags", *bags["train"], "--val-bags", *bags["val"], "--vlm-model-path", str(vlm_dir),
              "--epochs", str(args.epochs), "--patience", "6", "--sample-dt", "0.04", "--staleness", args.staleness,
              "--hidden-dim", "256", "--labels", args.labels, "--loss", args.loss,
              "--seed", str(args.seed), "--cache-dir", str(args.work / "feature_cache"),
              "--sensor-noise", str(args.sensor_noise),
              "--scene-tasks", str(args.scene_tasks), "--scene-fraction", str(args.scene_fraction)]
    turned = ["--turn-augment", str(args.turn_augment)] if args.turn_augment else []
    if args.turn_augment and args.turn_augment_range is not None:
        turned += ["--turn-augment-range", args.turn_augment_range]
    heads = (["--geometry-head"] if args.geometry_head else []) + (["--mode-gate"] if args.mode_gate else [])
    code = train.main([*common, *turned, *heads, "--out", str(args.out), "--name", args.out.name])
    if code == 0 and args.no_motion_out:  # a string: Path("") would be "."
        code = train.main([*common, "--out", args.no_motion_out, "--name", Path(args.no_motion_out).name,
                           "--no-motion-input"])
    return code


if __name__ == "__main__":
    sys.exit(main())
