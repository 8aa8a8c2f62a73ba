"""Grounding pretraining of the shipped stand-in VLM on simulator renders.

A randomly initialised tiny Kosmos-2 carries no usable information about where the instructed
object is, so an action expert trained on its features cannot drive to it. Real Kosmos-2 was
pretrained for grounding; the stand-in gets a miniature of that: the whole model is trained so
that its pooled feature (the one vlm_node publishes) predicts the instructed object's bearing and
distance, and the mean of its image latents predicts every colour's visibility, bearing and distance.
Frames are rendered from seeded tasks at random poses between the start and the target with random
heading offsets (more varied than expert episodes, where the target is mostly dead ahead). The
prediction heads are dropped afterwards; only the VLM is saved. Validation reports the bearing and
distance errors and how often the bearing points nearer the target's same-colour twin.

  python -m mobile_vla_ros.vlm.grounding --out DIR [--tasks 3500] [--epochs 40] [--device cuda]
  python -m mobile_vla_ros.vlm.grounding --out DIR --sizes 64x2x16x16 128x4x14x16   # sizes, same renders
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..sim import render_in_processes
from ..sim.world import (
    ALL_PHRASINGS,
    COLORS,
    SHAPES,
    SimConfig,
    SimObject,
    SimRobot,
    Task,
    in_view,
    sample_task,
    wrap_angle,
)
from .patch_labels import COVERED_SHARE, patch_shares
from .preprocess import ClipPixels

# target: sin, cos bearing, distance; then per colour (or, with shape slots, per colour and shape):
# visible, sin bearing, distance of the one of that kind nearest the image centre
KINDS = tuple((color, shape) for color in COLORS for shape in SHAPES)


TWIN_PAIRS = ("", "all", "in-view")


@dataclass(frozen=True)
class GroundingRecipe:
    """What the renders teach. The defaults are the stand-in shipped before 2026-12-03; the shipped one
    has `shape_slots`, `twin_pairs="in-view"` and `other_pairs` (with full resampler attention:
    make_default_model's defaults). `shape_slots`: the latents' labels per colour and shape instead of per colour;
    `twin_views`: a third of each hard task's frames look between the target and its same-colour twin
    (the twin alone or both in view) instead of at the target (with the causal resampler it lowered the
    twin confusion of the grounding but not the closed loop: docs/closed_loop_experiments.md).
    `twin_pairs` ("all" or "in-view"): every hard-task training frame (or those with the twin in view)
    is used twice, once instructed with the target and once with its twin (same phrasing, the other
    shape, the twin's labels), so the same image asks for two answers that only the shape word tells
    apart (validation frames stay unpaired). `patch_kinds`: each patch token of the vision tower also
    predicts which kind of object (colour and shape) covers its pixels, from the renderer's segmentation:
    the causal stand-in's patch tokens carry no shape (vlm/shape_probe.py: chance), and this asks the
    tower for it; its head stayed at chance too and the twin confusion rose (measured, not shipped:
    docs/closed_loop_experiments.md). `axis_views`: a third of each standard task's frames look straight at
    another object (within 0.1 rad) instead of near the target: the closed loop's failures at 1.5 s start
    from views with the target 20-40 degrees aside and another object on the camera axis, where the robot
    drives at that object; it met the hard set's goals and lost the standard set at 1.5 s (measured, not
    shipped: docs/closed_loop_experiments.md). `other_pairs`: every standard-task frame is also used once
    instructed with each other object in view (same phrasing, that object's colour and shape and labels):
    on the standard set's start images the image latents place the instructed kind on the right side where
    the pooled feature does not (vlm/binding_probe.py), so this asks the pooled feature to bind the
    instruction to the object it names in the very scenes whose first reading fails."""

    shape_slots: bool = False
    twin_views: bool = False
    twin_pairs: str = ""
    patch_kinds: bool = False
    axis_views: bool = False
    other_pairs: bool = False

    def __post_init__(self) -> None:
        if self.twin_pairs not in TWIN_PAIRS:
            raise ValueError(f"twin_pairs: expected one of {TWIN_PAIRS}, got {self.twin_pairs!r}")

FIRST_TASK_SEED = 2000  # renders use tasks apart from the recorded episodes' seeds (< 1000) and evaluation's


def _bearing(obj, x: float, y: float, yaw: float) -> float:
    return wrap_angle(math.atan2(obj.y - y, obj.x - x) - yaw)


def instructed_for(task: Task, obj: SimObject) -> Task:
    """The same scene instructed to go to `obj`, one of its objects, in the task's own phrasing."""
    target = task.target_object
    for phrasing in ALL_PHRASINGS:
        if phrasing.format(color=target.color, shape=target.shape) == task.instruction:
            return replace(task, target=task.objects.index(obj),
                           instruction=phrasing.format(color=obj.color, shape=obj.shape))
    raise ValueError(f"instruction {task.instruction!r} is none of the phrasings of {target.color} {target.shape}")


def twin_instructed(task: Task) -> Task | None:
    """The same scene instructed to go to the target's same-colour twin, in the task's own phrasing
    with the other shape word; None without a twin."""
    twin = next(iter(task.twins), None)
    return None if twin is None else instructed_for(task, twin)


def grounding_label(robot: SimRobot, shape_slots: bool = False, task: Task | None = None) -> np.ndarray:
    """Labels of the robot's current view for `task` (default: the robot's own task; another task of
    the same scene asks for another target)."""
    x, y, yaw = robot.pose()
    task = task or robot.task
    b = _bearing(task.target_object, x, y, yaw)
    target = task.target_object
    label = [math.sin(b), math.cos(b), math.hypot(target.x - x, target.y - y) - target.radius]
    for color, shape in KINDS if shape_slots else ((c, None) for c in COLORS):
        objs = [o for o in task.objects if o.color == color and shape in (None, o.shape)]
        if not objs:
            label += [0.0, 0.0, 0.0]
            continue
        obj = min(objs, key=lambda o: abs(_bearing(o, x, y, yaw)))  # of two, the one nearer the image centre
        bo = _bearing(obj, x, y, yaw)
        visible = float(in_view(bo, robot.cfg.half_fov))
        label += [visible, math.sin(bo) * visible, (math.hypot(obj.x - x, obj.y - y) - obj.radius) * visible]
    return np.array(label, dtype=np.float32)


def kind_map(robot: SimRobot) -> np.ndarray:
    """Per pixel of the robot's view, which kind of object it shows: uint8 [H, W], 0 for none, else
    1 + the (colour, shape) index in KINDS."""
    classes = np.array([1 + KINDS.index((o.color, o.shape)) for o in robot.task.objects] + [0], dtype=np.uint8)
    return classes[robot.render_objects()]  # index -1 (no object) -> the trailing 0


def twin_bearing(robot: SimRobot, task: Task | None = None) -> float:
    """Bearing of the target's same-colour twin (the other shape) when it is in view, else NaN: the
    frames on which a colour-only guess points at the twin, wherever the target is."""
    x, y, yaw = robot.pose()
    bearings = [_bearing(o, x, y, yaw) for o in (task or robot.task).twins]
    shown = [b for b in bearings if in_view(b, robot.cfg.half_fov)]
    return min(shown, key=abs) if shown else math.nan


def is_hard_task(index: int) -> bool:
    """Whether render_frames' task `index` is from the hard set (every other one)."""
    return index % 2 == 1


def render_frames(tasks: int, per_task: int, seed: int, workers: int = 1,
                  recipe: GroundingRecipe = GroundingRecipe(), first_task: int = 0) -> list[tuple]:
    """(rgb, instruction, label, twin bearing, kind map or None) at random poses of seeded tasks
    `first_task`..`tasks` - 1; `workers` processes render task ranges in parallel (each task's poses come
    from its own seed, so the result is the same, and so is a range rendered in parts)."""
    ranges = [(seed, per_task, range(first_task + k, tasks, workers), recipe) for k in range(max(1, workers))]
    parts = render_in_processes(_render_tasks, ranges, workers)
    by_task = {i: frames for part in parts for i, frames in part}
    return [frame for i in range(first_task, tasks) for frame in by_task[i]]


def _render_tasks(seed: int, per_task: int, indices: range,
                  recipe: GroundingRecipe) -> list[tuple[int, list[tuple]]]:
    """Every other task is from the hard set (same-colour twin of the other shape, targets behind the
    robot), so the instructed shape matters; a third of its frames look anywhere (away from the
    target) and, with `recipe.twin_views`, another third between the target and its twin. Each frame is
    followed by the same image instructed for the objects the recipe pairs it with."""
    out = []
    for i in indices:
        rng = np.random.default_rng([seed, i])
        hard = is_hard_task(i)
        task = sample_task(FIRST_TASK_SEED + seed * 100_000 + i,
                           SimConfig(task_set="hard" if hard else "standard", paraphrases=True))
        frames = []
        with SimRobot(task) as robot:
            target = task.target_object
            twin = next(iter(task.twins), None)
            others = [o for o in task.objects if o is not target]
            paired = twin_instructed(task) if recipe.twin_pairs and hard else None
            for k in range(per_task):
                a = rng.uniform(0.0, 0.85)
                x = task.start[0] + a * (target.x - task.start[0]) + rng.normal(0, 0.15)
                y = task.start[1] + a * (target.y - task.start[1]) + rng.normal(0, 0.15)
                to_target = math.atan2(target.y - y, target.x - x)
                view = k % 3
                if hard and view == 2:
                    yaw = to_target + rng.uniform(-math.pi, math.pi)
                elif hard and view == 1 and recipe.twin_views and twin is not None:
                    to_twin = math.atan2(twin.y - y, twin.x - x)
                    yaw = to_twin + rng.uniform(0.0, 1.0) * wrap_angle(to_target - to_twin) + rng.uniform(-0.2, 0.2)
                elif not hard and view == 1 and recipe.axis_views:
                    other = others[rng.integers(len(others))]
                    yaw = math.atan2(other.y - y, other.x - x) + rng.uniform(-0.1, 0.1)
                else:
                    yaw = to_target + rng.uniform(-0.7, 0.7)
                robot.place(x, y, yaw)
                rgb = robot.render()
                kinds = kind_map(robot) if recipe.patch_kinds else None
                frames.append((rgb, task.instruction, grounding_label(robot, recipe.shape_slots), twin_bearing(robot),
                               kinds))
                asked = [paired] if paired is not None and (recipe.twin_pairs == "all"
                                                             or not math.isnan(frames[-1][3])) else []
                if recipe.other_pairs and not hard:
                    asked += [instructed_for(task, o) for o in others
                              if in_view(_bearing(o, *robot.pose()), robot.cfg.half_fov)]
                frames += [(rgb, other.instruction, grounding_label(robot, recipe.shape_slots, other),
                            twin_bearing(robot, other), kinds) for other in asked]
        out.append((i, frames))
    return out


class Batcher:
    """Model inputs for many frames without the per-call processor: pixels normalised with the image
    processor's statistics (checked equal to it on the first frame), text tensors tokenised once
    per distinct instruction and right-padded to one length."""

    def __init__(self, extractor, frames: list[tuple], device: str = "cpu") -> None:
        import torch

        self.torch = torch
        self.device = device
        ip = extractor.processor.image_processor
        self.normalise = ClipPixels(ip, device).ops.normalise  # frames are rendered at the model's size
        self.images = torch.from_numpy(np.stack([f[0] for f in frames]))  # uint8 [N, H, W, 3]
        texts = sorted({f[1] for f in frames})
        prepared = {t: extractor.prepare([frames[0][0]], t) for t in texts}
        reference = ip(images=[frames[0][0]], return_tensors="pt")["pixel_values"]
        if not torch.allclose(self._pixels(self.images[:1].to(device)).cpu(), reference, atol=1e-5):
            raise RuntimeError("pixel normalisation differs from the model's image processor")
        self.length = max(p["input_ids"].shape[1] for p in prepared.values())
        pad = {"input_ids": extractor.pad_id, "position_ids": extractor.position_padding_idx}
        self.text = {}
        for t, p in prepared.items():
            extra = self.length - p["input_ids"].shape[1]
            self.text[t] = {k: torch.cat([p[k].cpu(), torch.full((1, extra), pad.get(k, 0), dtype=p[k].dtype)], 1)
                            for k in ("input_ids", "position_ids", "text_weights")}
            self.text[t]["last_index"] = p["last_index"].cpu()
            self.text[t]["image_index"] = p["image_index"].cpu()
        self.instructions = [f[1] for f in frames]
        self.labels = torch.from_numpy(np.stack([f[2] for f in frames])).to(device)
        has_kinds = [f[4] is not None for f in frames]
        if any(has_kinds) and not all(has_kinds):
            raise ValueError("either every frame has its kind map or none has")
        self.kind_maps = torch.from_numpy(np.stack([f[4] for f in frames])).to(device) if all(has_kinds) else None
        # Everything on the training device once: a batch is then a gather, not a host copy.
        self.images = self.images.to(device)
        self.text = {t: {k: v.to(device) for k, v in p.items()} for t, p in self.text.items()}

    def _pixels(self, images):
        return self.normalise(images.permute(0, 3, 1, 2).float())

    def batch(self, idx) -> dict:
        torch = self.torch
        rows = [self.text[self.instructions[i]] for i in idx]
        out = {k: torch.cat([r[k] for r in rows]) for k in ("input_ids", "position_ids", "text_weights", "last_index")}
        # image_index addresses the flattened [B * L] token array: offset each row's indices.
        out["image_index"] = torch.cat([r["image_index"] + j * self.length for j, r in enumerate(rows)])
        out["pixel_values"] = self._pixels(self.images[torch.as_tensor(idx, device=self.device)])
        return out


def patch_kind_targets(kind_maps, patch_size: int):
    """Per-pixel kind maps uint8 [B, H, W] -> each patch's share of every kind, [B, patches, classes]."""
    return patch_shares(kind_maps, 1 + len(KINDS), patch_size)


def _patch_kind_accuracy(logits, targets, min_share: float = COVERED_SHARE) -> dict:
    """On patches an object covers at least `min_share` of: how often the most likely kind is the
    covering one, and how often its shape is the covering object's shape."""
    share, truth = targets[..., 1:].max(dim=-1)
    covered = share >= min_share
    predicted = logits[..., 1:].argmax(dim=-1)[covered]
    truth = truth[covered]
    shape = len(SHAPES)
    return {"kind": float((predicted == truth).float().mean()) if covered.any() else math.nan,
            "shape": float((predicted % shape == truth % shape).float().mean()) if covered.any() else math.nan,
            "patches": int(covered.sum())}


def angle_error(a, b):
    return (a - b + math.pi).remainder(2 * math.pi).sub(math.pi).abs()


def twin_confusion(predicted, error, twins) -> dict:
    """On frames with the target's same-colour twin in view: how often the predicted bearing lies
    nearer the twin than the target."""
    both = ~twins.isnan()
    frames = int(both.sum())
    nearer_twin = angle_error(predicted[both], twins[both]) < error[both]
    return {"rate": float(nearer_twin.float().mean()) if frames else math.nan, "frames": frames}


def train_grounding(extractor, train: list, val: list, epochs: int, lr: float = 2e-3, batch: int = 64,
                    seed: int = 0, log=print) -> dict:
    """Train the Kosmos-2 extractor's model in place (on its device); returns validation errors."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = extractor.device
    data = Batcher(extractor, train + val, device)
    n, n_val = len(train), len(val)
    labels = data.labels
    twins = torch.tensor([f[3] for f in val], dtype=torch.float32, device=device)
    dim = extractor.feature_dim
    target_head = torch.nn.Linear(dim, 3).to(device)
    kind_head = torch.nn.Linear(dim, labels.shape[1] - 3).to(device)
    model = extractor.model
    params = [*model.parameters(), *target_head.parameters(), *kind_head.parameters()]
    patch_size = model.config.vision_config.patch_size
    patch_head = val_patch_targets = None
    if data.kind_maps is not None:
        patch_head = torch.nn.Linear(model.config.vision_config.hidden_size, 1 + len(KINDS)).to(device)
        params += [*patch_head.parameters()]
        val_patch_targets = patch_kind_targets(data.kind_maps[n:], patch_size)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps_per_epoch = max(1, n // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.1)

    def heads(idx):
        inputs = data.batch(idx)
        pooled = extractor._features(**inputs)
        kinds = extractor.image_latents(inputs["pixel_values"]).mean(dim=1).float()
        patches = None
        if patch_head is not None:  # every patch token (the class token dropped)
            patches = patch_head(extractor.vision_tokens(inputs["pixel_values"])[:, 1:].float())
        return target_head(pooled), kind_head(kinds), patches

    def patch_loss(patches, idx):
        if patches is None:
            return 0.0
        targets = patch_kind_targets(data.kind_maps[torch.as_tensor(idx, device=device)], patch_size)
        return -(targets * patches.log_softmax(dim=-1)).sum(dim=-1).mean()

    metrics: dict = {}
    for epoch in range(epochs):
        began = time.monotonic()
        model.train()
        order = rng.permutation(n)
        for step in range(steps_per_epoch):
            idx = order[step * batch:(step + 1) * batch]
            target, kinds, patches = heads(idx)
            loss = (torch.nn.functional.mse_loss(target, labels[idx, :3])
                    + torch.nn.functional.mse_loss(kinds, labels[idx, 3:]) + patch_loss(patches, idx))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            outputs = [heads(np.arange(i, min(i + 256, n + n_val))) for i in range(n, n + n_val, 256)]
            preds = torch.cat([o[0] for o in outputs])
        truth = labels[n:]
        predicted = torch.atan2(preds[:, 0], preds[:, 1])
        error = angle_error(predicted, torch.atan2(truth[:, 0], truth[:, 1]))
        metrics = {"bearing_mae_deg": math.degrees(float(error.mean())),
                   "twin_confusion": twin_confusion(predicted, error, twins),
                   "bearing_mae_deg_zero": math.degrees(float(torch.atan2(truth[:, 0], truth[:, 1]).abs().mean())),
                   "distance_mae_m": float((preds[:, 2] - truth[:, 2]).abs().mean()), "epochs": epoch + 1}
        if patch_head is not None:
            metrics["patch_kinds"] = _patch_kind_accuracy(torch.cat([o[2] for o in outputs]), val_patch_targets)
        log(f"grounding epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.4f}, val bearing MAE "
            f"{metrics['bearing_mae_deg']:.1f} deg (predicting 0: {metrics['bearing_mae_deg_zero']:.1f}), "
            f"nearer the twin {metrics['twin_confusion']['rate']:.0%} of {metrics['twin_confusion']['frames']}, "
            f"distance MAE {metrics['distance_mae_m']:.2f} m"
            + (", patch kinds right {kind:.0%} (shape {shape:.0%}) of {patches}".format(**metrics["patch_kinds"])
               if "patch_kinds" in metrics else "")
            + f" ({time.monotonic() - began:.1f} s)")
    return metrics


@dataclass(frozen=True)
class StandInSize:
    """The stand-in tiny Kosmos-2's size: embedding width, layers (vision and text each), patch size
    in pixels (224-pixel images), image tokens after the resampler; and whether the resampler's
    attention is causal (this module's default, and the stand-in shipped before 2026-12-03; the shipped
    one attends to all image tokens, make_default_model's default: README, Models)."""

    embed_dim: int = 64
    layers: int = 2
    patch_size: int = 16
    image_tokens: int = 16
    resampler_causal: bool = True

    def __str__(self) -> str:
        shape = f"{self.embed_dim}x{self.layers}x{self.patch_size}x{self.image_tokens}"
        return shape if self.resampler_causal else f"{shape}-full-resampler"

    @classmethod
    def parse(cls, text: str) -> StandInSize:
        try:
            return cls(*(int(v) for v in text.split("x")))
        except (TypeError, ValueError):
            raise ValueError(f"stand-in size {text!r}: expected WIDTHxLAYERS[xPATCH[xTOKENS]], "
                             "e.g. 128x4x16x16") from None


def load_stand_in(path, device: str = "cpu"):
    """A stand-in VLM as grounding trains and scores it: Kosmos-2 extractor, pooled last token, FP32."""
    from .base import ExtractorConfig
    from .factory import create_extractor

    return create_extractor(ExtractorConfig(backend="kosmos2", pooling="last_token", model_path=str(path),
                                            device=device, dtype="fp32", cuda_graphs=False))


def build_grounded_vlm(out: Path, tasks: int, epochs: int, seed: int = 0, device: str = "cpu",
                       per_task: int = 4, batch: int = 64, lr: float = 2e-3, workers: int = 1,
                       size: StandInSize = StandInSize(), recipe: GroundingRecipe = GroundingRecipe(),
                       frames: tuple[list, list] | None = None, shape_steps: int = 0, shape_scenes: int = 1000,
                       shape_views: int = 8, init: Path | None = None, render_seed: int | None = None,
                       log=print) -> dict:
    """Build the trainable tiny Kosmos-2 (or start from the stand-in saved in `init`; `size` is then
    its own), first train its vision tower on shape for `shape_steps` steps (on `shape_views` far views of
    each of `shape_scenes` hard scenes: vlm/shape_stage.py), ground it for `epochs` epochs on renders
    (`frames`: already rendered training and validation frames; 0 epochs: none rendered), save it (FP32)
    to `out`. `seed` sets the initialisation and the batch order, `render_seed` (default: `seed`) the
    rendered tasks: one set of renders can ground stand-ins of several seeds."""
    import shutil
    import tempfile

    import torch

    from .kosmos2 import RESAMPLER_CAUSAL_KEY
    from .tiny import build_tiny_kosmos2

    began = time.monotonic()
    if init is not None:
        extractor = load_stand_in(init, device)
        config = extractor.model.config
        size = StandInSize(config.vision_config.hidden_size, config.vision_config.num_hidden_layers,
                           config.vision_config.patch_size, config.latent_query_num,
                           bool(getattr(config, RESAMPLER_CAUSAL_KEY, False)))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            build_tiny_kosmos2(tmp, seed=seed, embed_dim=size.embed_dim, layers=size.layers,
                               patch_size=size.patch_size, image_tokens=size.image_tokens, trainable=True,
                               resampler_causal=size.resampler_causal)
            extractor = load_stand_in(tmp, device)
    metrics: dict = {}
    if shape_steps:
        from .shape_stage import render_shape_views, train_tower_shape

        shape_train, shape_test = render_shape_views(shape_scenes, max(1, shape_scenes // 4), workers, shape_views)
        log(f"rendered {len(shape_train)} + {len(shape_test)} held-out views for the shape stage "
            f"({time.monotonic() - began:.0f} s)")
        metrics["shape_stage"] = train_tower_shape(extractor, shape_train, shape_test, shape_steps, seed=seed,
                                                   log=log)
    if epochs:
        frames, val = frames or render_grounding_frames(tasks, per_task, seed if render_seed is None else render_seed,
                                                        workers, recipe)
        log(f"rendered {len(frames)} training and {len(val)} validation frames ({time.monotonic() - began:.0f} s)")
        metrics.update(train_grounding(extractor, frames, val, epochs, lr=lr, batch=batch, seed=seed, log=log))
    shutil.rmtree(out, ignore_errors=True)
    extractor.model.to(torch.float32).cpu().save_pretrained(out)
    extractor.processor.save_pretrained(out)
    metrics["seconds"] = time.monotonic() - began
    metrics["size"] = asdict(size)
    metrics["recipe"] = asdict(recipe)
    if init is not None:
        metrics["init"] = str(init)
    return metrics


def render_grounding_frames(tasks: int, per_task: int, seed: int, workers: int = 1,
                            recipe: GroundingRecipe = GroundingRecipe()) -> tuple[list, list]:
    """Training frames of `tasks` seeded tasks and validation frames of a tenth as many others (never
    paired with the twin or other objects: the twin confusion is measured on the tasks' own instructions, as
    the robot gets them; no
    axis views: recipes that differ in them are compared on the same frames)."""
    val_recipe = replace(recipe, twin_pairs="", axis_views=False, other_pairs=False)
    return (render_frames(tasks, per_task, seed, workers, recipe),
            render_frames(max(50, tasks // 10), 2, seed + 1, workers, val_recipe))


def _build_in_child(out: Path, size: StandInSize, frames: tuple[list, list], kwargs: dict, queue) -> None:
    queue.put((str(out), build_grounded_vlm(out, size=size, frames=frames,
                                            log=lambda line: print(f"[{out.name}] {line}", flush=True), **kwargs)))


def build_sizes(out: Path, sizes: list[StandInSize], tasks: int, per_task: int, seed: int, workers: int,
                recipe: GroundingRecipe = GroundingRecipe(), render_seed: int | None = None,
                **kwargs) -> dict[str, dict]:
    """Ground several stand-in sizes on the same renders, each in its own process (forked after
    rendering, before any CUDA use) -> OUT/<size>; returns each one's validation metrics."""
    import multiprocessing

    frames = render_grounding_frames(tasks, per_task, seed if render_seed is None else render_seed, workers, recipe)
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    children = [fork.Process(target=_build_in_child, args=(out / str(size), size, frames,
                                                            dict(kwargs, tasks=tasks, seed=seed, recipe=recipe),
                                                            queue))
                for size in sizes]
    for child in children:
        child.start()
    results = dict(queue.get() for _ in children)
    for child in children:
        child.join()
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.vlm.grounding", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tasks", type=int, default=3500, help="seeded tasks")
    ap.add_argument("--frames-per-task", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2, help="rendering processes")
    ap.add_argument("--epochs", type=int, default=40,
                    help="of grounding; 0: none (e.g. save the stand-in after --shape-steps, to ground it later "
                         "with --init)")
    ap.add_argument("--seed", type=int, default=0,
                    help="initialisation and batch order (and the renders, unless --render-seed)")
    ap.add_argument("--render-seed", type=int, default=None, help="the rendered tasks' seed (default: --seed)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--sizes", type=StandInSize.parse, nargs="+", default=None,
                    help="WIDTHxLAYERSxPATCHxTOKENS; several: each is grounded on the same renders -> OUT/<size>")
    ap.add_argument("--full-resampler", action="store_true",
                    help="the resampler attends to every image token (Kosmos-2's attention, and the shipped "
                         "stand-in's; default: causal, the stand-in shipped before 2026-12-03)")
    ap.add_argument("--shape-slots", action="store_true", help="latent labels per colour and shape")
    ap.add_argument("--twin-views", action="store_true", help="hard-task frames between target and twin")
    ap.add_argument("--axis-views", action="store_true",
                    help="a third of the standard tasks' frames look straight at another object")
    ap.add_argument("--twin-pairs", choices=TWIN_PAIRS[1:], default="",
                    help="hard-task frames (all, or those with the twin in view) also instructed with the twin")
    ap.add_argument("--other-pairs", action="store_true",
                    help="standard-task frames also instructed with each other object in view")
    ap.add_argument("--patch-kinds", action="store_true",
                    help="each vision patch token also predicts the kind (colour, shape) of object it shows")
    ap.add_argument("--shape-steps", type=int, default=0,
                    help="first train the vision tower on box-or-cylinder per patch for this many steps "
                         "(vlm/shape_stage.py; 0: no shape stage, as shipped)")
    ap.add_argument("--shape-scenes", type=int, default=1000, help="hard scenes of the shape stage")
    ap.add_argument("--shape-views", type=int, default=8, help="far views per scene of the shape stage")
    ap.add_argument("--init", type=Path, default=None,
                    help="start from this saved stand-in (its own size) instead of a freshly initialised one")
    args = ap.parse_args(argv)
    if args.init is not None and (args.sizes is not None or args.full_resampler):
        ap.error("--init grounds the saved stand-in at its own size and resampler attention (its config.json): "
                 "leave out --sizes and --full-resampler")
    args.sizes = args.sizes or [StandInSize()]
    if args.full_resampler:
        args.sizes = [replace(size, resampler_causal=False) for size in args.sizes]
    common = {"epochs": args.epochs, "device": args.device, "batch": args.batch, "lr": args.lr,
              "recipe": GroundingRecipe(args.shape_slots, args.twin_views, args.twin_pairs, args.patch_kinds,
                                        args.axis_views, args.other_pairs),
              "shape_steps": args.shape_steps, "shape_scenes": args.shape_scenes, "shape_views": args.shape_views}
    if len(args.sizes) > 1:
        results = build_sizes(args.out, args.sizes, args.tasks, args.frames_per_task, args.seed, args.workers,
                              render_seed=args.render_seed, **common)
    else:
        results = {str(args.out): build_grounded_vlm(args.out, args.tasks, seed=args.seed, workers=args.workers,
                                                     per_task=args.frames_per_task, size=args.sizes[0],
                                                     init=args.init, render_seed=args.render_seed, **common)}
    for out, metrics in results.items():
        print(f"grounded stand-in VLM -> {out}: {metrics}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
