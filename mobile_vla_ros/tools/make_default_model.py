"""Produce models/default from scratch with fixed seeds:

  python -m mobile_vla_ros.tools.make_default_model --out models/default [--device cuda]

1. the stand-in VLM: a tiny Kosmos-2 (patch 16, 64-dim) built with `trainable_init`, grounding-
   pretrained on 16,000 seeded renders (vlm/grounding.py; 4 min on one H100 with MUJOCO_GL=egl, about 1.5 h
   on 2 CPU cores) and saved to OUT/vlm; `--vlm DIR` uses an already grounded one instead;
2. mobile-vla-record-sim: expert episodes, seeds 0..N-1 for training and 900.. for validation
   (`mobile-vla-bringup --sim` evaluates on seeds from 1000, renders use 2000+: never trained on);
3. mobile-vla-train on those bags with that VLM, staleness-aware for vlm_hz 3.33 -> OUT.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

VAL_SEED = 900


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.tools.make_default_model", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    ap.add_argument("--work", type=Path, default=Path("default_model_work"), help="bags and intermediate files")
    ap.add_argument("--episodes", type=int, default=150)
    ap.add_argument("--val-episodes", type=int, default=30)
    ap.add_argument("--vlm", type=Path, default=None, help="an already grounded stand-in VLM directory")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="for grounding")
    ap.add_argument("--grounding-tasks", type=int, default=2000)
    ap.add_argument("--grounding-epochs", type=int, default=60)
    ap.add_argument("--epochs", type=int, default=40, help="action-expert epochs")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..vlm.grounding import build_grounded_vlm
    from . import record_sim, train

    vlm_dir = args.out / "vlm"
    if args.vlm is not None:
        if args.vlm.resolve() != vlm_dir.resolve():
            shutil.rmtree(vlm_dir, ignore_errors=True)
            shutil.copytree(args.vlm, vlm_dir)
    else:
        metrics = build_grounded_vlm(vlm_dir, args.grounding_tasks, args.grounding_epochs, args.seed, args.device,
                                     per_task=8, batch=256 if args.device == "cuda" else 64,
                                     workers=min(14, os.cpu_count() or 1))
        print(f"stand-in VLM -> {vlm_dir}: {metrics}")
    train_dir, val_dir = args.work / "train", args.work / "val"
    for out, seed, n in ((train_dir, args.seed, args.episodes), (val_dir, VAL_SEED, args.val_episodes)):
        if record_sim.main(["--episodes", str(n), "--seed", str(seed), "--out", str(out)]) != 0:
            return 1
    return train.main(["--bags", str(train_dir), "--val-bags", str(val_dir), "--out", str(args.out),
                       "--vlm-model-path", str(vlm_dir), "--epochs", str(args.epochs), "--seed", str(args.seed),
                       "--name", args.out.name, "--cache-dir", str(args.work / "feature_cache")])


if __name__ == "__main__":
    sys.exit(main())
