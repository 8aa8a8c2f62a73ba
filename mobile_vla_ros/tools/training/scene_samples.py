"""Training samples whose features come from grounding renders of many more scenes than the episodes show.

The expert episodes cover a few hundred scenes, the stand-in's grounding renders thousands, and the
action expert learns to read the features only from the former: on some held-out scenes (a green box
20-28 deg to the right) it reads "straight on" or "not in view" although a linear readout of the same
features, fitted on grounding renders, finds the target within 6 deg (docs/closed_loop_experiments.md).
A scene sample puts one rendered view's features in place of a training sample's and keeps that
sample's sensor window and motion since its image: the robot took the rendered image at the origin of
its body frame, has since moved by the motion input, and the label is what the image-informed expert
(`informed_chunks`) does from there. Everything but the features is a recorded state of the robot, and
the label follows from the render's ground truth, so the view needs no episode of its own.

`mobile-vla-train --scene-tasks N --scene-fraction F` renders N seeded tasks (vlm/grounding.py's frames,
render seed SCENE_SEED: apart from the stand-in's own renders and the readout probes'), caches their
features beside the bags' and replaces F of each training batch with scene samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...sim.episode import IN_VIEW
from ...sim.expert_labels import EXPERT_FIELDS, informed_chunks
from ...sim.world import SimObject, in_view
from .feature_cache import frames_name, write_atomically

SCENE_SEED = 11  # render seed: the shipped stand-in was grounded on seed 0's renders, the probes use 70
VIEWS_PER_TASK = 8  # as the grounding renders
TARGET_RADIUS = SimObject.radius  # every simulated object's


@dataclass
class SceneSamples:
    """Rendered views: the features of each (its own instruction) and its target in the body frame at the view."""

    features: np.ndarray  # [N, F] float32
    target: np.ndarray    # [N, 3] the target's centre x, y (m) in the view's body frame, and its radius

    def __len__(self) -> int:
        return len(self.features)

    @classmethod
    def from_labels(cls, features: np.ndarray, labels: np.ndarray) -> SceneSamples:
        """From grounding labels [N, >=3] (sin, cos bearing, distance to the surface: grounding_label)."""
        bearing = np.arctan2(labels[:, 0], labels[:, 1])
        centre = labels[:, 2] + TARGET_RADIUS
        return cls(np.asarray(features, dtype=np.float32),
                   np.stack([centre * np.cos(bearing), centre * np.sin(bearing),
                             np.full(len(labels), TARGET_RADIUS)], axis=1))

    def shows_target(self, views: np.ndarray) -> np.ndarray:
        """[B] bool: the view shows the target (within the labels' IN_VIEW band)."""
        target = self.target[views]
        return in_view(np.arctan2(target[:, 1], target[:, 0]), IN_VIEW)

    def labels(self, views: np.ndarray, motion: np.ndarray, steps: int, dt: float,
               twist_mapping: list[str]) -> np.ndarray:
        """[B, steps, D] float32 labels of the robot that took `views` at its body frame's origin and has
        since moved by `motion` [B, 4] (age, dx, dy, dyaw: the motion input), columns as `twist_mapping`."""
        columns = [EXPERT_FIELDS.index(f) for f in twist_mapping]
        pose = np.asarray(motion, dtype=np.float64)[:, 1:4]
        chunks = informed_chunks(pose, self.target[views], self.shows_target(views), np.zeros(len(views)), steps, dt)
        return chunks[..., columns].astype(np.float32)

    def geometry(self, views: np.ndarray) -> np.ndarray:
        """[B, 3] float32 geometry-head targets (InformedLabels.image_geometry): shown, centre x, y."""
        return np.concatenate([self.shows_target(views)[:, None], self.target[views, :2]], axis=1).astype(np.float32)


def scene_samples(extractor, key: str, tasks: int, cache_dir: Path, workers: int = 1, progress=None,
                  block: int = 250) -> SceneSamples:
    """Render `tasks` seeded tasks' views (VIEWS_PER_TASK each) and take their features with `extractor`
    (as vlm_node publishes them: one image and its instruction), cached under `cache_dir` by the feature
    function's `key` and the first task's views (a renderer that draws them differently misses the cache);
    rendered and extracted `block` tasks at a time (28,000 views' pixels are 4 GB)."""
    from ...vlm.grounding import render_frames

    first_views = ((rgb, text) for rgb, text, *_ in render_frames(1, VIEWS_PER_TASK, SCENE_SEED))
    name = frames_name(f"{key}/{tasks}/{VIEWS_PER_TASK}/{SCENE_SEED}", first_views)
    path = cache_dir / key / f"scenes_{name}.npz"
    if path.is_file():
        with np.load(path) as cached:
            return SceneSamples(cached["features"], cached["target"])
    features, labels = [], []
    for first in range(0, tasks, block):
        # render_frames seeds each task by its index: rendering the first n tasks in blocks gives the same views
        frames = render_frames(min(tasks, first + block), VIEWS_PER_TASK, SCENE_SEED, workers,
                               first_task=first)
        features += [extractor.extract([rgb], text)[0] for rgb, text, *_ in frames]
        labels += [label[:3] for _, _, label, *_ in frames]
        if progress is not None:
            progress(min(tasks, first + block) / tasks)
    samples = SceneSamples.from_labels(np.stack(features), np.stack(labels))
    write_atomically(path, lambda tmp: np.savez(tmp, features=samples.features, target=samples.target))
    return samples
