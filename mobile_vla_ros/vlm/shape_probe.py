"""Does a stand-in VLM's vision tower see shape? A probe, patch by patch, against the raw pixels.

The hard task set asks for "the red box" with a red cylinder beside it, so the features must carry the
shape. This renders views of hard scenes with the target and its same-colour twin both 1-4.5 m ahead,
labels every patch an object covers (at least `min_share` of its pixels, from MuJoCo's segmentation)
box or cylinder, and fits the same small MLP to each input -- the patch's raw pixels, and the vision
tower's token of that patch after each layer -- on the patches of 70 % of the scenes; it reports the
share of the other scenes' patches whose shape it gets right (chance: about one half).

  python -m mobile_vla_ros.vlm.shape_probe --vlm models/default/vlm [--scenes 300] [--out probe.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from .patch_labels import patch_labels, render_pair_views

FIRST_SCENE_SEED = 5000  # apart from training (< 1000), evaluation (1000+) and grounding renders (2000+)


def fit_probe(x_train, y_train, x_test, epochs: int = 60, seed: int = 0) -> np.ndarray:
    """The labels that an MLP (one hidden layer of 256) fitted to standardised (x_train, y_train) gives x_test."""
    import torch

    torch.manual_seed(seed)
    x_train, x_test = torch.as_tensor(x_train, dtype=torch.float32), torch.as_tensor(x_test, dtype=torch.float32)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    y = torch.as_tensor(y_train, dtype=torch.float32)
    mlp = torch.nn.Sequential(torch.nn.Linear(x_train.shape[1], 256), torch.nn.GELU(), torch.nn.Linear(256, 1))
    opt = torch.optim.AdamW(mlp.parameters(), 1e-3, weight_decay=1e-2)
    for _ in range(epochs):
        for batch in torch.randperm(len(y)).split(256):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(mlp(x_train[batch])[:, 0], y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return (mlp(x_test)[:, 0] > 0).numpy()


def probe(vlm_dir: Path, scenes: int = 300, views: int = 4, epochs: int = 60, seed: int = 0,
          far: float = 2.5) -> dict:
    """Shape accuracy on held-out scenes' patches per input: raw pixels and each vision-tower layer's tokens
    (all patches, and those of objects farther than `far` m)."""
    import torch

    from .base import ExtractorConfig
    from .factory import create_extractor
    from .preprocess import ClipPixels

    extractor = create_extractor(ExtractorConfig(backend="kosmos2", model_path=str(vlm_dir), cuda_graphs=False))
    patch = extractor.model.config.vision_config.patch_size
    normalise = ClipPixels(extractor.processor.image_processor, "cpu").ops.normalise
    frames = render_pair_views(scenes, views, seed, FIRST_SCENE_SEED)
    images = torch.from_numpy(np.stack([f[0] for f in frames])).permute(0, 3, 1, 2).float()
    with torch.no_grad():
        layers = []  # per frame [layers + 1, patches, D]: the patch embedding, then each layer's output
        for i in range(0, len(frames), 64):
            hidden = extractor.model.vision_model(pixel_values=normalise(images[i:i + 64]), output_hidden_states=True)
            layers.append(torch.stack(hidden.hidden_states, 1)[:, :, 1:].numpy())  # the class token dropped
        tokens = np.concatenate(layers)
        pixels = normalise(images).unfold(2, patch, patch).unfold(3, patch, patch)  # [N, 3, G, G, P, P]
        pixels = pixels.permute(0, 2, 3, 1, 4, 5).reshape(len(frames), -1, 3 * patch * patch).numpy()
    labels, distances = patch_labels(frames, patch)
    frame, index = np.nonzero(labels >= 0)
    box, distance = labels[frame, index] == 1, distances[frame, index]
    train = frame < int(0.7 * len(frames))  # by scene: a scene's views are consecutive
    inputs = {"raw pixels": pixels[frame, index]}
    inputs |= {("patch embedding" if k == 0 else f"vision layer {k}"): tokens[frame, k, index]
               for k in range(tokens.shape[1])}
    result = {"vlm": str(vlm_dir), "scenes": scenes, "views": views, "patch_size": patch,
              "train_patches": int(train.sum()), "test_patches": int((~train).sum()),
              "box_share": float(box.mean()), "accuracy": {}, "accuracy_far": {}}
    far_test = distance[~train] > far
    for name, x in inputs.items():
        right = fit_probe(x[train], box[train], x[~train], epochs, seed) == box[~train]
        result["accuracy"][name] = float(right.mean())
        result["accuracy_far"][name] = float(right[far_test].mean())
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.vlm.shape_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vlm", type=Path, required=True, help="a stand-in (Kosmos-2 architecture) VLM directory")
    ap.add_argument("--scenes", type=int, default=300)
    ap.add_argument("--views", type=int, default=4, help="per scene")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON")
    args = ap.parse_args(argv)
    result = probe(args.vlm, args.scenes, args.views, args.epochs, args.seed)
    print(f"box vs cylinder per patch, {result['test_patches']} held-out patches ({result['box_share']:.0%} boxes)")
    print("| input | shape right | objects beyond 2.5 m |\n|---|---|---|")
    for name, accuracy in result["accuracy"].items():
        print(f"| {name} | {accuracy:.1%} | {result['accuracy_far'][name]:.1%} |")
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
