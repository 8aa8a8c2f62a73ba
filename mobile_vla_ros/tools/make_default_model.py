"""Produce models/default from scratch with a fixed seed, on a CPU (about 30 min on 2 cores):

  python -m mobile_vla_ros.tools.make_default_model --out models/default

1. mobile-vla-record-sim: expert episodes, seeds 0..N-1 for training and 900.. for validation
   (the closed-loop evaluation of `mobile-vla-bringup --sim` uses seeds from 1000: never trained on);
2. the stand-in VLM: a tiny Kosmos-2 (patch 16, 64-dim) built with `trainable_init`, then grounding-
   trained on the training episodes' frames (vlm/grounding.py) and saved to OUT/vlm;
3. mobile-vla-train on the same bags with that VLM, staleness-aware for vlm_hz 3.33 -> OUT.
"""

from __future__ import annotations

import argparse
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
    ap.add_argument("--grounding-epochs", type=int, default=40)
    ap.add_argument("--grounding-frames", type=int, default=4000, help="training frames for grounding")
    ap.add_argument("--epochs", type=int, default=40, help="action-expert epochs")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ..vlm.base import ExtractorConfig, create_extractor
    from ..vlm.grounding import frames_with_labels, train_grounding
    from ..vlm.tiny import build_tiny_kosmos2
    from . import record_sim, train
    from .train import find_bags

    train_dir, val_dir = args.work / "train", args.work / "val"
    for out, seed, n in ((train_dir, args.seed, args.episodes), (val_dir, VAL_SEED, args.val_episodes)):
        if record_sim.main(["--episodes", str(n), "--seed", str(seed), "--out", str(out)]) != 0:
            return 1
    init_dir = args.work / "vlm_init"
    build_tiny_kosmos2(init_dir, seed=args.seed, patch_size=16, trainable=True)
    extractor = create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(init_dir),
                                                 device="cpu", dtype="fp32"))
    train_bags, val_bags = find_bags([train_dir]), find_bags([val_dir])
    frames_per_bag = max(1, args.grounding_frames // len(train_bags))
    train_frames, val_frames = [], []
    for bag in train_bags:
        frames = frames_with_labels(bag, every=1)
        train_frames += frames[:: max(1, len(frames) // frames_per_bag)]
    for bag in val_bags:
        val_frames += frames_with_labels(bag, every=6)
    print(f"grounding the stand-in VLM on {len(train_frames)} frames ({len(val_frames)} held out)")
    metrics = train_grounding(extractor, train_frames, val_frames, epochs=args.grounding_epochs, seed=args.seed)
    vlm_dir = args.out / "vlm"
    shutil.rmtree(vlm_dir, ignore_errors=True)
    extractor.model.save_pretrained(vlm_dir)
    extractor.processor.save_pretrained(vlm_dir)
    print(f"stand-in VLM -> {vlm_dir}: val bearing MAE {metrics['bearing_mae_deg']:.1f} deg, "
          f"distance MAE {metrics['distance_mae_m']:.2f} m")
    return train.main(["--bags", str(train_dir), "--val-bags", str(val_dir), "--out", str(args.out),
                       "--vlm-model-path", str(vlm_dir), "--epochs", str(args.epochs), "--seed", str(args.seed),
                       "--name", args.out.name, "--cache-dir", str(args.work / "feature_cache")])


if __name__ == "__main__":
    sys.exit(main())
