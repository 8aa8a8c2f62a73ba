"""Grounding training of the shipped stand-in VLM on simulator frames.

A randomly initialised tiny Kosmos-2 carries no usable information about where the instructed
object is, so an action expert trained on its features cannot drive to it. Real Kosmos-2 was
pretrained for grounding; the stand-in gets a miniature of that: the whole model is trained so
that its pooled feature (the one the VLM node publishes) predicts the instructed object's bearing
and distance, and the mean of its image latents predicts every colour's bearing and distance.
Labels come from the recorded bags' /sim/task and /sim/ground_truth_pose, so this runs on the
same data as mobile-vla-train. The prediction heads are dropped afterwards; only the VLM is saved.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..sim.messages import TOPICS
from ..sim.world import COLORS, SimConfig

LABELS = 3 + 3 * len(COLORS)  # target: sin, cos bearing, distance; per colour: visible, sin bearing, distance


def frames_with_labels(bag: Path, every: int = 2, cfg: SimConfig | None = None) -> list[tuple]:
    """(rgb, instruction, label) for every `every`-th image of a record-sim bag."""
    from rosbags.highlevel import AnyReader

    from ..ros.conversions import image_to_rgb

    cfg = cfg or SimConfig()
    half_fov = math.radians(cfg.camera_fovy) / 2
    task, images, poses = None, [], []
    with AnyReader([Path(bag)]) as reader:
        wanted = {"/" + TOPICS[k] for k in ("task", "image", "pose")}
        conns = [c for c in reader.connections if c.topic in wanted]
        for conn, _, raw in reader.messages(connections=conns):
            msg = reader.deserialize(raw, conn.msgtype)
            if conn.topic == "/" + TOPICS["task"]:
                task = json.loads(msg.data)
            elif conn.topic == "/" + TOPICS["image"]:
                images.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg))
            else:
                q = msg.pose.orientation
                poses.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, msg.pose.position.x,
                              msg.pose.position.y, 2 * math.atan2(q.z, q.w)))
    if task is None or not poses:
        raise ValueError(f"{bag}: not a mobile-vla-record-sim bag (needs /{TOPICS['task']} and /{TOPICS['pose']})")
    pose_t = np.array([p[0] for p in poses])
    out = []
    for t, msg in images[::every]:
        _, x, y, yaw = poses[int(np.clip(np.searchsorted(pose_t, t), 0, len(poses) - 1))]
        target = task["objects"][task["target"]]
        b = _bearing(target, x, y, yaw)
        label = [math.sin(b), math.cos(b), math.hypot(target["x"] - x, target["y"] - y) - target["radius"]]
        for color in COLORS:
            objs = [o for o in task["objects"] if o["color"] == color]
            if not objs:
                label += [0.0, 0.0, 0.0]
                continue
            bo = _bearing(objs[0], x, y, yaw)
            visible = float(abs(bo) < half_fov)
            label += [visible, math.sin(bo) * visible, (math.hypot(objs[0]["x"] - x, objs[0]["y"] - y)
                                                       - objs[0]["radius"]) * visible]
        out.append((image_to_rgb(msg), task["instruction"], np.array(label, dtype=np.float32)))
    return out


def _bearing(obj: dict, x: float, y: float, yaw: float) -> float:
    return (math.atan2(obj["y"] - y, obj["x"] - x) - yaw + math.pi) % (2 * math.pi) - math.pi


def train_grounding(extractor, train: list, val: list, epochs: int = 30, lr: float = 2e-3, batch: int = 32,
                    seed: int = 0, log=print) -> dict:
    """Train the Kosmos-2 extractor's model in place; returns the validation bearing/distance errors."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    prepared = [_prepare(extractor, rgb, text) for rgb, text, _ in train + val]
    length = max(p["input_ids"].shape[1] for p in prepared)
    prepared = [_pad(extractor, p, length) for p in prepared]
    labels = torch.from_numpy(np.stack([lab for _, _, lab in train + val]))
    n = len(train)
    dim = extractor.feature_dim
    target_head, colour_head = torch.nn.Linear(dim, 3), torch.nn.Linear(dim, LABELS - 3)
    model = extractor.model
    params = list(model.parameters()) + list(target_head.parameters()) + list(colour_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps = epochs * max(1, n // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)

    def heads(idx):
        inputs = _batch(prepared, idx, length)
        pooled = extractor._features(**inputs)
        colours = extractor.image_latents(inputs["pixel_values"]).mean(dim=1).float()
        return target_head(pooled), colour_head(colours)

    metrics = {}
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            idx = order[i:i + batch]
            target, colours = heads(idx)
            loss = (torch.nn.functional.mse_loss(target, labels[idx, :3])
                    + torch.nn.functional.mse_loss(colours, labels[idx, 3:]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        metrics = _evaluate(heads, labels, n, len(val))
        log(f"grounding epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.4f}, val bearing MAE "
            f"{metrics['bearing_mae_deg']:.1f} deg (predicting 0: {metrics['bearing_mae_deg_zero']:.1f}), "
            f"distance MAE {metrics['distance_mae_m']:.2f} m")
    model.eval()
    return metrics


def _evaluate(heads, labels, n: int, n_val: int) -> dict:
    import torch

    with torch.no_grad():
        preds = torch.cat([heads(np.arange(i, min(i + 64, n + n_val)))[0] for i in range(n, n + n_val, 64)])
    truth = labels[n:]
    bearing = torch.atan2(preds[:, 0], preds[:, 1])
    true_bearing = torch.atan2(truth[:, 0], truth[:, 1])
    return {"bearing_mae_deg": math.degrees(float((bearing - true_bearing).abs().mean())),
            "bearing_mae_deg_zero": math.degrees(float(true_bearing.abs().mean())),
            "distance_mae_m": float((preds[:, 2] - truth[:, 2]).abs().mean())}


def _prepare(extractor, rgb: np.ndarray, text: str) -> dict:
    return extractor.prepare([rgb], text)


def _pad(extractor, p: dict, length: int) -> dict:
    """Right-pad one prepared sample's token tensors to `length` (pad tokens are masked out)."""
    import torch

    extra = length - p["input_ids"].shape[1]
    if extra == 0:
        return p
    values = {"input_ids": extractor.pad_id, "position_ids": extractor.position_padding_idx}
    out = dict(p)
    for k in ("input_ids", "attention_mask", "position_ids", "text_weights"):
        out[k] = torch.cat([p[k], torch.full((1, extra), values.get(k, 0), dtype=p[k].dtype)], dim=1)
    return out


def _batch(prepared: list[dict], idx, length: int) -> dict:
    import torch

    keys = ("pixel_values", "input_ids", "attention_mask", "position_ids", "last_index", "text_weights")
    out = {k: torch.cat([prepared[i][k] for i in idx]) for k in keys}
    # image_index addresses the flattened [B * L] token array: offset each row's indices.
    out["image_index"] = torch.cat([prepared[i]["image_index"] + j * length for j, i in enumerate(idx)])
    return out
