"""Far views of a hard scene's target and its same-colour twin, and what covers each patch of a view
(from MuJoCo's segmentation): the labels the shape probe scores a vision tower on and the shape stage
trains it on; the patch shares the grounding's per-patch kinds use."""

from __future__ import annotations

import math

import numpy as np

from ..sim.world import SimConfig, SimRobot, sample_task

# A patch shows an object when the object covers at least this share of the patch's pixels.
COVERED_SHARE = 0.4


def patch_shares(label_maps, classes: int, patch_size: int):
    """Per-pixel labels [B, H, W] (0 .. classes - 1) -> each patch's share of every label, [B, patches,
    classes], the patches row by row as the vision tower's tokens."""
    import torch

    one_hot = torch.nn.functional.one_hot(label_maps.long(), classes).permute(0, 3, 1, 2).float()
    return torch.nn.functional.avg_pool2d(one_hot, patch_size).flatten(2).transpose(1, 2)


def render_pair_views(scenes: int, views: int, seed: int, first_scene: int) -> list[tuple]:
    """(rgb, per-pixel object index, task, robot x, y) of `views` poses per hard scene (seeds from
    `first_scene`), each looking at the midpoint of the target and its twin from 1-4.5 m away."""
    rng = np.random.default_rng(seed)
    cfg = SimConfig(task_set="hard")
    out = []
    for s in range(scenes):
        task = sample_task(first_scene + s, cfg)
        target, twin = task.target_object, task.twins[0]
        mx, my = (target.x + twin.x) / 2, (target.y + twin.y) / 2
        with SimRobot(task, cfg) as robot:
            for _ in range(views):
                distance, around = rng.uniform(1.0, 4.5), rng.uniform(-math.pi, math.pi)
                x, y = mx + distance * math.cos(around), my + distance * math.sin(around)
                robot.place(x, y, math.atan2(my - y, mx - x) + rng.uniform(-0.3, 0.3))
                out.append((robot.render(), robot.render_objects(), task, x, y))
    return out


def patch_shapes(object_map: np.ndarray, task, patch: int,
                 min_share: float = COVERED_SHARE) -> list[tuple[int, bool, int]]:
    """(patch index, is a box, object index) of each patch that one object covers at least `min_share` of;
    patches are numbered row by row, as the vision tower's tokens."""
    import torch

    # Object index -1 (none) .. len - 1 as labels 0 .. len: the share of each object is column 1 + index.
    shares = patch_shares(torch.from_numpy(object_map + 1)[None], 1 + len(task.objects), patch)[0, :, 1:]
    return [(int(p), task.objects[i].shape == "box", int(i)) for p, i in (shares >= min_share).nonzero().tolist()]


def patch_labels(frames: list[tuple], patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of `render_pair_views` and patch (row by row): 1 box, 0 cylinder, -1 no object covering
    it; and the covering object's distance from the robot in m (0 where none)."""
    grid = frames[0][1].shape[0] // patch
    labels = np.full((len(frames), grid * grid), -1, dtype=np.int8)
    distances = np.zeros((len(frames), grid * grid), dtype=np.float32)
    for n, (_, objects, task, x, y) in enumerate(frames):
        for p, box, i in patch_shapes(objects, task, patch):
            labels[n, p] = box
            distances[n, p] = math.hypot(task.objects[i].x - x, task.objects[i].y - y)
    return labels, distances
