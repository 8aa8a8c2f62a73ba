"""A shape stage for the stand-in VLM's vision tower, before its grounding.

The hard task set asks for "the red box" with a red cylinder beside it, so the features must carry the
shape. Grounding alone leaves the stand-in's patch tokens at chance on it (`shape_probe`), and so did a
per-patch shape loss trained at a constant learning rate. With the schedule vision transformers are
usually trained with -- AdamW, warm-up then cosine decay, clipped gradients, views flipped left-right --
the tower learns it from far views of hard scenes (the target and its same-colour twin 1-4.5 m away):
box or cylinder per patch, through a linear head on the tokens the resampler reads (README, Models;
docs/closed_loop_experiments.md). The head is thrown away; the tower keeps what it learned.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..sim import render_in_processes
from .patch_labels import patch_labels, render_pair_views
from .preprocess import ClipPixels

FAR = 2.5  # m: an object this far fits in one or two 16-pixel patches
# Hard scenes of this stage: apart from the policy's training (< 1000) and evaluation (1000+) seeds, the
# grounding renders (2000+) and the shape probe's (5000+).
TRAIN_SCENES_FROM, TEST_SCENES_FROM = 10_000, 9_000
VIEWS_PER_SCENE = 4


def render_shape_views(scenes: int, test_scenes: int, workers: int = 1,
                       views_per_scene: int = VIEWS_PER_SCENE) -> tuple[list, list]:
    """Training frames (`views_per_scene` per scene) and held-out frames (VIEWS_PER_SCENE per scene) of
    `render_pair_views`, `workers` processes rendering scene ranges (each range's poses from its own
    seed: the same frames for any number of workers)."""
    jobs = [(train, first, min(25, end - first), views)  # ranges of at most 25 scenes
            for train, start, end, views in ((True, TRAIN_SCENES_FROM, TRAIN_SCENES_FROM + scenes, views_per_scene),
                                             (False, TEST_SCENES_FROM, TEST_SCENES_FROM + test_scenes, VIEWS_PER_SCENE))
            for first in range(start, end, 25)]
    parts = render_in_processes(render_pair_views, [(count, views, first, first) for _, first, count, views in jobs],
                                workers)
    frames: dict[bool, list] = {True: [], False: []}
    for (train, *_), part in zip(jobs, parts, strict=True):
        frames[train] += part
    return frames[True], frames[False]


def train_tower_shape(extractor, train_frames: list[tuple], test_frames: list[tuple], steps: int,
                      batch: int = 128, lr: float = 1e-3, warmup: int = 300, seed: int = 0, log=print) -> dict:
    """Train the Kosmos-2 extractor's vision tower in place for `steps` (>= 1) steps on box-or-cylinder per
    patch of `render_pair_views` frames, and leave it in eval mode; returns the held-out accuracy on
    `test_frames` (all covered patches, and those of objects farther than FAR)."""
    import torch

    torch.manual_seed(seed)
    device = extractor.device
    patch = extractor.model.config.vision_config.patch_size
    grid = train_frames[0][0].shape[0] // patch
    normalise = ClipPixels(extractor.processor.image_processor, device).ops.normalise

    def tensors(frames):
        labels, distances = patch_labels(frames, patch)
        images = torch.from_numpy(np.stack([f[0] for f in frames])).to(device)
        return images, torch.from_numpy(labels).long().to(device), torch.from_numpy(distances).to(device)

    def pixels(images):
        return normalise(images.permute(0, 3, 1, 2).float())

    train_images, train_labels, _ = tensors(train_frames)
    test_images, test_labels, test_distances = tensors(test_frames)
    tower = extractor.model.vision_model
    width = extractor.model.config.vision_config.hidden_size
    head = torch.nn.Sequential(torch.nn.LayerNorm(width), torch.nn.Linear(width, 1)).to(device)

    def logits(x):  # the class token dropped
        return head(extractor.vision_tokens(x)[:, 1:].float())[..., 0]

    params = [*tower.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps)))

    def held_out() -> dict:
        right, far = [], []
        with torch.no_grad():
            for i in range(0, len(test_images), 64):
                labels = test_labels[i:i + 64]
                covered = labels >= 0
                right.append(((logits(pixels(test_images[i:i + 64])) > 0).long() == labels)[covered])
                far.append(test_distances[i:i + 64][covered] > FAR)
        right, far = torch.cat(right).float(), torch.cat(far)
        return {"accuracy": float(right.mean()), "accuracy_far": float(right[far].mean()),
                "patches": len(right), "box_share": float((test_labels == 1).sum() / (test_labels >= 0).sum())}

    generator = torch.Generator(device="cpu").manual_seed(seed)
    began = time.monotonic()
    for step in range(steps):
        tower.train()
        idx = torch.randint(0, len(train_images), (batch,), generator=generator).to(device)
        x, y = pixels(train_images[idx]), train_labels[idx]
        flip = (torch.rand(batch, generator=generator) < 0.5).to(device)  # a view and its labels, mirrored
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        y = torch.where(flip[:, None, None], y.view(-1, grid, grid).flip(2), y.view(-1, grid, grid)).flatten(1)
        covered = y >= 0
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(x)[covered], y[covered].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:  # the last step always
            tower.eval()
            result = held_out()
            log(f"shape stage step {step + 1}/{steps}: loss {float(loss.detach()):.3f}, held-out shape right "
                f"{result['accuracy']:.1%} (beyond {FAR} m {result['accuracy_far']:.1%}) "
                f"({time.monotonic() - began:.0f} s)")
    return {**result, "steps": steps, "train_views": len(train_frames), "test_views": len(test_frames),
            "seconds": time.monotonic() - began}
