"""mobile-vla-train: staleness-aware training of the action expert on rosbag2 bags.

Data: each bag's images go through the VLM once (the backend and pooling the model will run with);
the features are cached on disk, keyed by the VLM files, backend, pooling, prompt, and the hash of
each image with its instruction, so later runs (other staleness settings, other seeds) skip the VLM.
A sample is the sensor window ending at time t (as the node sees it), the recorded commands over
the next K steps of action_dt (zero-order hold, as mobile-vla-eval scores them) and the features
of the newest image at t - delta. delta is drawn anew every epoch from the deployment
distribution, uniform in [VLM latency, latency + one VLM period] (`--staleness auto`): what the
asynchronous node feeds the expert while it reuses features between VLM forwards. `--staleness
fresh` trains on the newest image only (the synchronous assumption), for comparison.

Training: AdamW with cosine decay, validation MAE (robot units, whole chunk) per epoch on held-out
bags with a fixed staleness draw, early stopping, a resumable checkpoint per epoch (`--resume`).
Writes action_expert.pt + action_expert.onnx (verified against PyTorch) + model.yaml into --out,
and the VLM it was trained with into --out/vlm, so the directory is a complete model.

`torchrun --nproc_per_node=N -m mobile_vla_ros.tools.training.train ...` trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU): every rank draws the same global shuffle and staleness, takes its
share of each batch (batch size / N), and gradients are averaged, so N processes take the same
steps as one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.model_spec import ModelSpec, ModelSpecError, Normalization
from ...core.motion import MOTION_INPUT, MotionHistory, extend_from_streams, twist_components
from ...core.names import CMD_VEL_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC, SENSOR_TOPIC, bag_topic
from ...core.params import FEATURE_POOLINGS, VLM_BACKENDS
from ...core.sensor_window import SENSOR_CHANNELS
from ...sim.expert_labels import EXPERT_FIELDS, InformedLabels
from ..cli import comma_list, progress_bar, run_reporting_errors
from ..recordings import (
    EXECUTED_TOPIC,
    SENSOR_MSGTYPES,
    SIM_TRUTH_TOPICS,
    BagError,
    Recording,
    commands_over,
    find_bags,
    read_recording,
    sensor_type_of,
)
from .feature_cache import frames_name, write_atomically
from .scene_samples import SCENE_SEED, VIEWS_PER_TASK, SceneSamples, scene_samples

STATE_FILE = "train_state.pt"
LABEL_SOURCES = ("recorded", "sim-expert")
# --loss: its torch.nn.functional name
ACTION_LOSSES = {"mse": "mse_loss", "l1": "l1_loss"}


def vlm_key(extractor_config, model_path: Path) -> str:
    """Identity of the feature function: backend, pooling, prompt and the VLM's files."""
    h = hashlib.sha256(json.dumps([extractor_config.backend, extractor_config.pooling, extractor_config.prompt,
                                   extractor_config.clip_model_path]).encode())
    for path in sorted(Path(model_path).rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:16]


def bag_features(rec: Recording, extractor, cache_dir: Path, key: str, progress=None) -> np.ndarray:
    """[N_images, F] features of the bag's images (each with the instruction active at its stamp);
    `progress(fraction of this bag)` now and then while they are computed."""
    texts = [_instruction_at(rec, t) for t, _ in rec.images]
    path = cache_dir / key / f"{frames_name(key, ((rgb, text) for (_, rgb), text in zip(rec.images, texts)))}.npy"
    if path.is_file():
        return np.load(path)
    feats = []
    for i, ((_, rgb), text) in enumerate(zip(rec.images, texts)):
        feats.append(extractor.extract([rgb], text)[0])
        if i % 20 == 0 and progress is not None:
            progress(i / len(rec.images))
    out = np.stack(feats).astype(np.float32)
    write_atomically(path, lambda tmp: np.save(tmp, out))
    return out


def _instruction_at(rec: Recording, t: float) -> str:
    text = rec.instructions[0][1] if rec.instructions else ""
    for stamp, value in rec.instructions:
        if stamp <= t:
            text = value
    return text


@dataclass
class Dataset:
    """All bags' arrays concatenated. Times are shifted by bag index x BAG_GAP so one sorted search
    over the concatenated image times finds the newest image of the sample's own bag."""

    image_times: np.ndarray    # [N_img] shifted
    image_first: np.ndarray    # [S] index of the first image of the sample's bag
    features: np.ndarray       # [N_img, F]
    sensor: np.ndarray         # [N_sensor, C]
    window_end: np.ndarray     # [S] index one past the window's newest sample
    times: np.ndarray          # [S] shifted sample times
    targets: np.ndarray        # [S, K, D] the recorded commands over each sample's chunk
    # all bags end to end, shifted times (motion-input models, and sim-expert labels: a scene view's label
    # follows the motion since the image whether or not the model is given it)
    motion_history: MotionHistory | None = None
    # --labels sim-expert: (samples, image indices, turns or None) -> [S, K, D] labels from the expert
    # with the information of each sample's image, replacing `targets`.
    relabel: Callable[[np.ndarray, np.ndarray, np.ndarray | None], np.ndarray] | None = None
    # --labels sim-expert: image indices -> [B, 3] the geometry head's targets (InformedLabels.image_geometry)
    geometry: Callable[[np.ndarray], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.times)

    def labels(self, samples: np.ndarray, image_index: np.ndarray, turn: np.ndarray | None = None) -> np.ndarray:
        """[S, K, D] action labels of `samples` whose features come from `image_index`: the recorded
        commands, or with --labels sim-expert what the expert would do knowing only that image (and,
        with `turn`, after turning that much further in place: `turn_augmentation`)."""
        if self.relabel is None:
            if turn is not None:
                raise ValueError("turned samples need labels recomputed from the pose (--labels sim-expert)")
            return self.targets[samples]
        return self.relabel(samples, image_index, turn)

    def motion(self, samples: np.ndarray, image_index: np.ndarray, turn: np.ndarray | None = None) -> np.ndarray:
        """[S, 4] motion from each sample's feature image to the sample time, as the node computes it;
        `turn` [S] (rad) is added to the yaw (a turn in place at the end leaves dx, dy unchanged)."""
        motion = self.motion_history.motion_since(self.image_times[image_index], self.times[samples])
        if turn is not None:
            motion[:, 3] += turn
        return motion

    def feature_index(self, samples: np.ndarray, staleness: np.ndarray) -> np.ndarray:
        """Index of the newest image at (sample time - staleness), never before its bag's first image."""
        idx = np.searchsorted(self.image_times, self.times[samples] - staleness, side="right") - 1
        return np.maximum(idx, self.image_first[samples])

    def windows(self, samples: np.ndarray, width: int) -> np.ndarray:
        return self.sensor[self.window_end[samples, None] - width + np.arange(width)]


BAG_GAP = 1.0e6  # s: larger than any bag


def build_dataset(recordings: list[Recording], features: list[np.ndarray], spec: ModelSpec,
                  sample_dt: float, twist_mapping: list[str], labels: str = "recorded") -> Dataset:
    image_times, image_first, feats, sensor, window_end, times, targets = [], [], [], [], [], [], []
    informed = []
    n_img = n_sensor = 0
    width, k, dt = spec.sensor_window, spec.chunk_size, spec.action_dt
    history = None
    if spec.motion_input or labels == "sim-expert":
        history = MotionHistory(math.inf, spec.sensor_hz, capacity=sum(len(r.sensor) for r in recordings) + 16)
    for b, (rec, f) in enumerate(zip(recordings, features)):
        it = np.array([t for t, _ in rec.images])
        st = np.array([t for t, _ in rec.sensor])
        if history is not None:
            executed = np.array([twist_components(v, twist_mapping) for _, v in rec.executed])
            extend_from_streams(history, spec.sensor_type, st + b * BAG_GAP, np.stack([v for _, v in rec.sensor]),
                                np.array([t for t, _ in rec.executed]) + b * BAG_GAP, executed)
        ct, cv = rec.command_arrays()
        start = max(st[width - 1], it[0]) if len(st) >= width else np.inf
        stop = ct[-1] - (k - 1) * dt
        t = np.arange(start, stop, sample_dt)
        if len(t) == 0:
            continue
        ends = np.searchsorted(st, t, side="right")
        image_times.append(it + b * BAG_GAP)
        feats.append(f)
        sensor.append(np.stack([v for _, v in rec.sensor]))
        image_first.append(np.full(len(t), n_img))
        window_end.append(ends + n_sensor)
        times.append(t + b * BAG_GAP)
        targets.append(commands_over(ct, cv, t, k, dt)[0])
        if labels == "sim-expert":
            informed.append(_informed_labels(rec, b, it, t))
        n_img += len(it)
        n_sensor += len(st)
    if not times:
        raise BagError("no training samples: bags shorter than one sensor window plus one chunk")
    dataset = Dataset(np.concatenate(image_times), np.concatenate(image_first),
                      np.concatenate(feats).astype(np.float32), np.concatenate(sensor).astype(np.float32),
                      np.concatenate(window_end), np.concatenate(times), np.concatenate(targets).astype(np.float32),
                      history)
    if labels == "sim-expert":
        unknown = [f for f in twist_mapping if f not in EXPERT_FIELDS]
        if unknown:
            raise ValueError(f"--labels sim-expert: the sim expert commands {', '.join(EXPERT_FIELDS)}; "
                             f"--twist-mapping has {', '.join(unknown)}")
        expert, columns = InformedLabels.concatenate(informed), [EXPERT_FIELDS.index(f) for f in twist_mapping]
        dataset.relabel = lambda samples, images, turn: expert.chunks(samples, images, k, dt, turn)[
            ..., columns].astype(np.float32)
        dataset.geometry = expert.image_geometry
    return dataset


def _informed_labels(rec: Recording, index: int, image_times: np.ndarray, sample_times: np.ndarray) -> InformedLabels:
    if not rec.poses or rec.task is None:
        raise BagError(f"bag {index + 1}: --labels sim-expert needs the simulator's ground truth "
                       f"({', '.join(SIM_TRUTH_TOPICS.values())}), which mobile-vla-record-sim writes")
    target = rec.task["objects"][rec.task["target"]]
    return InformedLabels.of_episode(np.array([t for t, _ in rec.poses]), np.array([p for _, p in rec.poses]),
                                     (target["x"], target["y"], target["radius"]), image_times, sample_times)


def staleness_range(value: str, vlm_hz: float, vlm_latency: float) -> tuple[float, float]:
    if value == "auto":
        return vlm_latency, vlm_latency + 1.0 / vlm_hz
    if value == "fresh":
        return 0.0, 0.0
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError as exc:
        raise ValueError(f"--staleness: expected auto, fresh or MIN,MAX seconds, got {value!r}") from exc
    if not 0 <= lo <= hi:
        raise ValueError(f"--staleness: expected 0 <= MIN <= MAX, got {lo}, {hi}")
    return lo, hi


def turn_augmentation(rng: np.random.Generator, n: int, fraction: float, turn_range: tuple[float, float],
                      staleness: np.ndarray | None = None, max_age: float | None = None) -> np.ndarray | None:
    """[n] extra turns (rad) for a batch: uniform in `turn_range` for `fraction` of the samples, 0 for the rest
    and for samples whose drawn `staleness` [n] is `max_age` s or more (turned samples only where the
    features are younger: `--turn-augment-max-age`).

    The expert's episodes hold few states where the robot has turned well past the image its features
    come from (the memory-driven expert steers as soon as the target is in view), but a policy on a slow
    VLM reaches them: it keeps searching after an image that showed the target, or turns past it. A
    sample turned in place by delta (its motion input's yaw and its pose, from which the sim-expert
    labels are recomputed) is such a state, consistent with the image: the image's features, the
    motion since, and what the expert would do there. The sensor window stays as recorded."""
    if fraction <= 0:
        return None
    turns = np.where(rng.random(n) < fraction, rng.uniform(*turn_range, n), 0.0)
    if max_age is not None:
        turns[np.asarray(staleness) >= max_age] = 0.0
    return turns


def drop_windows(windows, dropped: np.ndarray, sensor_mean):
    """Sensor windows [B, W, C] with those of the `dropped` samples [B] replaced by the training mean
    (zero once normalised): those samples must be acted on from the features and the motion since
    the image alone, so the model cannot just continue the motion the window shows (the copycat
    shortcut of behaviour cloning: a robot that searched in every recording keeps turning)."""
    import torch

    keep = torch.from_numpy(~dropped).to(windows.device)[:, None, None]
    return torch.where(keep, windows, sensor_mean.to(windows.dtype))


def sensor_noise_level(sensor: np.ndarray) -> np.ndarray:
    """Each channel's white-noise standard deviation [C] in a recorded stream [N, C]: from the median
    absolute difference of successive samples, which a signal that changes slowly at the sensor's rate
    leaves to the noise (and the median ignores the steps at bag boundaries)."""
    steps = np.abs(np.diff(np.asarray(sensor, dtype=np.float64), axis=0))
    return (np.median(steps, axis=0) / (0.6745 * math.sqrt(2.0))).astype(np.float32)


def sensor_noise(rng: np.random.Generator, n: int, width: int, noise_std: np.ndarray) -> np.ndarray:
    """Fresh white noise [n, width, C] of `noise_std` [C] for a batch's sensor windows: a recorded
    window keeps the same noise in every epoch, so a model can fit it, and a channel that carries
    nothing but noise (the roll and pitch rates of a base on flat ground) is normalised to the spread
    of the channels that do. Drawn anew each batch, the noise is worth nothing to the fit."""
    return rng.standard_normal((n, width, len(noise_std))).astype(np.float32) * noise_std


def geometry_metrics(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """How well the geometry head read the validation images: "in view" right, and the median error
    of the target's position (m) over the images that show it."""
    from ...models.action_expert import GEOMETRY_SCALE

    shown = truth[:, 0] > 0.5
    error = np.hypot(*(predicted[shown, 1:] * GEOMETRY_SCALE - truth[shown, 1:]).T)
    return {"geometry_in_view_accuracy": float(((predicted[:, 0] > 0) == shown).mean()),
            "geometry_position_error_m_p50": float(np.median(error)) if shown.any() else float("nan")}


def _heads_text(val: dict) -> str:
    """The epoch line's report of the geometry head and the mode gate, when the model has them."""
    gate = f"  gate: in view {val['gate_in_view_accuracy']:.1%}" if "gate_in_view_accuracy" in val else ""
    if "geometry_in_view_accuracy" not in val:
        return gate
    return (f"  in view {val['geometry_in_view_accuracy']:.1%}, position error "
            f"{val['geometry_position_error_m_p50']:.2f} m{gate}")


class Trainer:
    def __init__(self, args, spec: ModelSpec, train: Dataset, val: Dataset, dist,
                 scenes: SceneSamples | None = None) -> None:
        import torch

        from ...models.action_expert import ActionExpertConfig, build_action_expert

        self.torch, self.args, self.spec, self.train, self.val, self.dist = torch, args, spec, train, val, dist
        self.scenes = scenes  # --scene-tasks: rendered views whose features replace some training samples'
        torch.manual_seed(args.seed)
        self.device = torch.device(dist.device)
        config = ActionExpertConfig.from_spec(spec)
        self.geometry_head, self.mode_gate = config.geometry_head, config.mode_gate
        model = build_action_expert(config)
        model.set_normalization(spec.normalization)
        self.model = model.to(self.device)
        self.ddp = self.model
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if dist.cuda else None)
        self.action_loss = getattr(torch.nn.functional, ACTION_LOSSES[args.loss])
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        self.steps_per_epoch = max(1, len(train) // args.batch_size)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: 0.5 * (1 + math.cos(
            math.pi * min(step / (self.steps_per_epoch * args.epochs), 1.0))))
        self.epoch, self.best, self.best_state, self.stale_epochs, self.history = 0, float("inf"), None, 0, []
        rng = np.random.default_rng(args.seed + 1)
        self.val_staleness = rng.uniform(*spec.staleness_range, len(val))
        self.sensor_mean = torch.tensor(spec.normalization.sensor_mean, device=self.device)
        self.sensor_std = torch.tensor(spec.normalization.sensor_std, device=self.device)
        self.action_mean = torch.tensor(spec.normalization.action_mean, device=self.device)
        self.action_std = torch.tensor(spec.normalization.action_std, device=self.device)
        self.channel_noise = sensor_noise_level(train.sensor)  # also reported in train_report.json

    def _batch(self, data: Dataset, samples: np.ndarray, staleness: np.ndarray, turn: np.ndarray | None = None):
        """(inputs in graph order, targets, image indices) of `samples` with features `staleness` s older than each
        (and turned in place by `turn` rad: `turn_augmentation`)."""
        t = self.torch
        image = data.feature_index(samples, staleness)
        inputs = [data.features[image], data.windows(samples, self.spec.sensor_window)]
        if self.spec.motion_input:
            inputs.append(data.motion(samples, image, turn))
        return ([t.from_numpy(np.ascontiguousarray(x)).to(self.device) for x in inputs],
                t.from_numpy(data.labels(samples, image, turn)).to(self.device), image)

    def _scene_rows(self, inputs, y, truth, rows: np.ndarray, views: np.ndarray, motion: np.ndarray) -> None:
        """Give the batch's `rows` the features of the rendered `views` and the labels (and geometry
        targets) of the robot that took them and has since moved by `motion` [rows, 4], the rows' motion
        since their image (scene_samples)."""
        to = self.torch.from_numpy
        inputs[0][to(rows)] = to(self.scenes.features[views]).to(self.device)
        y[to(rows)] = to(self.scenes.labels(views, motion, self.spec.chunk_size, self.spec.action_dt,
                                            list(self.args.twist_mapping))).to(self.device)
        if truth is not None:
            truth[to(rows)] = to(self.scenes.geometry(views)).to(self.device)

    def _normalized(self, actions):
        """Actions in the units the loss is taken in, so that both dimensions weigh alike."""
        return (actions - self.action_mean) / self.action_std

    def run_epoch(self) -> float:
        """One epoch; every rank draws the same permutation and staleness and takes its share."""
        from ...models.action_expert import geometry_loss, mode_gate_loss

        torch, args, dist = self.torch, self.args, self.dist
        rng = np.random.default_rng([args.seed, self.epoch])
        order = rng.permutation(len(self.train))
        staleness = rng.uniform(*self.spec.staleness_range, len(self.train))
        self.ddp.train()
        total = 0.0
        per_rank = args.batch_size // dist.world
        for step in range(self.steps_per_epoch):
            batch = order[step * args.batch_size:(step + 1) * args.batch_size]
            share = slice(dist.rank * per_rank, (dist.rank + 1) * per_rank)
            mine = batch[share]
            # Every random draw is made for the whole batch and sliced, so N ranks take one process's steps.
            turn = turn_augmentation(rng, len(batch), args.turn_augment, args.turn_augment_range, staleness[batch],
                                     args.turn_augment_max_age)
            inputs, y, images = self._batch(self.train, mine, staleness[mine], None if turn is None else turn[share])
            if args.sensor_noise > 0:
                noise_std = args.sensor_noise * self.channel_noise
                noise = sensor_noise(rng, len(batch), self.spec.sensor_window, noise_std)[share]
                inputs[1] = inputs[1] + torch.from_numpy(noise).to(self.device)
            if args.sensor_dropout > 0:
                dropped = rng.random(len(batch))[share] < args.sensor_dropout
                inputs[1] = drop_windows(inputs[1], dropped, self.sensor_mean)
            truth = (torch.from_numpy(self.train.geometry(images)).float().to(self.device)
                     if self.geometry_head or self.mode_gate else None)
            if self.scenes is not None:
                rows = np.flatnonzero((rng.random(len(batch)) < args.scene_fraction)[share])
                views = rng.integers(len(self.scenes), size=len(batch))[share][rows]
                motion = self.train.motion(mine[rows], images[rows], None if turn is None else turn[share][rows])
                self._scene_rows(inputs, y, truth, rows, views, motion)
            # Through the (DDP) module's forward, so DDP's gradient hooks fire.
            if self.mode_gate:
                steer, search, gate, geometry = self.ddp(*inputs, return_modes=True)
                loss = mode_gate_loss(self._normalized(steer), self._normalized(search), gate, truth[:, 0],
                                      self._normalized(y), self.action_loss)
            else:
                actions, geometry = self.ddp(*inputs, return_geometry=True) if self.geometry_head else \
                    (self.ddp(*inputs), None)
                loss = self.action_loss(self._normalized(actions), self._normalized(y))
            if geometry is not None:
                loss = loss + geometry_loss(geometry, truth)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.sched.step()
            total += float(loss.detach())
            if dist.rank == 0 and step % 20 == 0:
                progress_bar(f"epoch {self.epoch + 1}/{args.epochs}", (step + 1) / self.steps_per_epoch)
        return total / self.steps_per_epoch

    def validate(self) -> dict:
        torch = self.torch
        self.model.eval()
        errs, geometry, gates, truth = [], [], [], []
        with torch.no_grad():
            for start in range(0, len(self.val), 4096):
                idx = np.arange(start, min(start + 4096, len(self.val)))
                inputs, y, images = self._batch(self.val, idx, self.val_staleness[idx])
                if self.mode_gate:  # one forward for the chunk and the gate's reading
                    steer, search, gate, predicted = self.model(*inputs, return_modes=True)
                    actions = self.model.pick_mode(steer, search, gate)
                    gates.append(gate.cpu().numpy())
                else:
                    actions, predicted = self.model(*inputs, return_geometry=True) if self.geometry_head else \
                        (self.model(*inputs), None)
                errs.append((actions - y).abs().cpu().numpy())
                if predicted is not None:
                    geometry.append(predicted.cpu().numpy())
                if self.geometry_head or self.mode_gate:
                    truth.append(self.val.geometry(images))
        err = np.concatenate(errs)
        metrics = {"mae_chunk": float(err.mean()), "mae_first_step": float(err[:, 0].mean()),
                   "mae_per_dim": [float(v) for v in err.mean(axis=(0, 1))]}
        if geometry:
            metrics |= geometry_metrics(np.concatenate(geometry), np.concatenate(truth))
        if gates:
            shown = np.concatenate(truth)[:, 0] > 0.5
            metrics["gate_in_view_accuracy"] = float(((np.concatenate(gates) > 0) == shown).mean())
        return metrics

    def state(self) -> dict:
        return {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                "epoch": self.epoch, "best": self.best, "best_state": self.best_state,
                "stale_epochs": self.stale_epochs, "history": self.history}

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.epoch, self.best, self.best_state = state["epoch"], state["best"], state["best_state"]
        self.stale_epochs, self.history = state["stale_epochs"], state["history"]

    def fit(self, state_path: Path) -> None:
        args, torch = self.args, self.torch
        while self.epoch < args.epochs and self.stale_epochs < args.patience:
            began = time.monotonic()
            train_loss = self.run_epoch()
            val = self.validate()
            self.epoch += 1
            improved = val["mae_chunk"] < self.best - 1e-6
            if improved:
                self.best = val["mae_chunk"]
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
                self.stale_epochs = 0
            else:
                self.stale_epochs += 1
            self.history.append({"epoch": self.epoch, "train_loss": train_loss, **val,
                                 "seconds": time.monotonic() - began})
            if self.dist.rank == 0:
                print(f"\repoch {self.epoch:3d}  train loss {train_loss:.4f}  val MAE chunk {val['mae_chunk']:.4f} "
                      f"first step {val['mae_first_step']:.4f}{'  *' if improved else ''}{_heads_text(val)}"
                      f"  ({time.monotonic() - began:.1f} s)", flush=True)
                tmp = state_path.with_suffix(".tmp")
                torch.save(self.state(), tmp)
                tmp.replace(state_path)


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: str = "cpu"
    cuda: bool = False

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed

            torch.distributed.barrier()

    def close(self) -> None:
        """Ranks leave together, with nothing left holding the process group (DDP's reducer does): one
        that tore gloo down while rank 0 still wrote the model dir aborted at exit ("terminate called
        without an active exception", seen once in CI)."""
        if self.world > 1:
            import gc

            import torch.distributed

            gc.collect()
            self.barrier()
            torch.distributed.destroy_process_group()


def init_distributed() -> Distributed:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: gloo on CPU, NCCL with one GPU per rank. A single
    process trains on the GPU when there is one."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return Distributed(device="cuda:0" if cuda else "cpu", cuda=cuda)
    import torch.distributed

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    torch.distributed.init_process_group("nccl" if cuda else "gloo")
    return Distributed(torch.distributed.get_rank(), world, f"cuda:{local}" if cuda else "cpu", cuda)


def _turn_range(value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected LO,HI in rad, got {value!r}") from exc
    if lo > hi:
        raise argparse.ArgumentTypeError(f"expected LO <= HI, got {lo}, {hi}")
    return lo, hi


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bags", type=Path, nargs="+", required=True, help="bags or directories of bags")
    ap.add_argument("--val-bags", type=Path, nargs="*", default=None,
                    help="held-out bags; default: the last --val-fraction of --bags")
    ap.add_argument("--val-fraction", type=float, default=0.2)
    ap.add_argument("--out", type=Path, required=True, help="model directory to write (models/<name>)")
    ap.add_argument("--vlm-model-path", type=Path, default=None, help="default: models/default/vlm")
    ap.add_argument("--vlm-backend", default="kosmos2", choices=VLM_BACKENDS)
    ap.add_argument("--clip-model-path", default="")
    ap.add_argument("--pooling", default="last_token", choices=FEATURE_POOLINGS)
    ap.add_argument("--staleness", default="auto", help="auto | fresh | MIN,MAX seconds")
    ap.add_argument("--vlm-hz", type=float, default=3.33, help="deployment VLM rate, for --staleness auto")
    ap.add_argument("--vlm-latency", type=float, default=0.05, help="deployment VLM latency (s), for auto")
    ap.add_argument("--sensor-type", default="auto", choices=["auto", *SENSOR_MSGTYPES],
                    help="imu or wrench; auto: the message type of --sensor-topic in the first bag")
    ap.add_argument("--sensor-window", type=int, default=65)
    ap.add_argument("--sensor-hz", type=float, default=650.0)
    ap.add_argument("--chunk-size", type=int, default=8)
    ap.add_argument("--action-dt", type=float, default=0.0125)
    ap.add_argument("--action-names", type=comma_list(), default="linear_x,angular_z")
    ap.add_argument("--twist-mapping", type=comma_list(), default="linear.x,angular.z")
    ap.add_argument("--image-topic", default=bag_topic(IMAGE_TOPIC))
    ap.add_argument("--sensor-topic", default=bag_topic(SENSOR_TOPIC))
    ap.add_argument("--instruction-topic", default=bag_topic(INSTRUCTION_TOPIC))
    ap.add_argument("--action-topic", default=bag_topic(CMD_VEL_TOPIC))
    ap.add_argument("--executed-topic", default=EXECUTED_TOPIC,
                    help="Twist commands the robot executed, for the motion since the image (default: what "
                         "mobile-vla-record-sim writes); bags without it use --action-topic")
    ap.add_argument("--labels", choices=LABEL_SOURCES, default="recorded",
                    help="recorded: the commands on --action-topic; sim-expert (bags of mobile-vla-record-sim): "
                         "what the sim expert does knowing only the sample's image and the motion since it, "
                         "recomputed for every staleness draw")
    ap.add_argument("--motion-input", action=argparse.BooleanOptionalAction, default=True,
                    help="give the model the motion since the features' image as a third input (default); "
                         "--no-motion-input trains a two-input model")
    ap.add_argument("--hidden-dim", type=int, default=128)
    ap.add_argument("--geometry-head", action="store_true",
                    help="the features also predict where the target was in their image, supervised by the "
                         "simulator's ground truth, and that estimate moved by the motion since the image "
                         "enters the head (needs --labels sim-expert and the motion input)")
    ap.add_argument("--mode-gate", action="store_true",
                    help="two chunk heads, steer and search (the two branches of the labels' rule), and a gate on "
                         "the features that picks one by whether the image shows the target, supervised by the "
                         "simulator's ground truth (needs --labels sim-expert)")
    ap.add_argument("--loss", choices=sorted(ACTION_LOSSES), default="mse",
                    help="on the normalised actions: mse (the mean label) or l1 (the median: where the labels of "
                         "similar inputs disagree, e.g. steer or search at the image's edge, it picks the likelier "
                         "one instead of averaging them)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--sensor-dropout", type=float, default=0.0,
                    help="fraction of training samples whose sensor window is replaced by its mean (0-1)")
    ap.add_argument("--sensor-noise", type=float, default=0.0, metavar="SCALE",
                    help="add fresh white noise to each training window, SCALE times each channel's noise as "
                         "estimated from the training streams (sensor_noise_level); 0: none")
    ap.add_argument("--turn-augment", type=float, default=0.0, metavar="FRACTION",
                    help="fraction of training samples turned in place by a random angle, their motion input "
                         "and sim-expert labels recomputed (needs --labels sim-expert and the motion input)")
    ap.add_argument("--turn-augment-range", type=_turn_range, default="-1.0,1.0", metavar="LO,HI",
                    help="--turn-augment angles, uniform in [LO, HI] rad (positive: counter-clockwise, the way "
                         "the expert searches; default %(default)s)")
    ap.add_argument("--turn-augment-max-age", type=float, default=None, metavar="SECONDS",
                    help="turn only samples whose features are drawn younger than this (default: at every age)")
    ap.add_argument("--scene-tasks", type=int, default=0, metavar="N",
                    help="render N seeded tasks' views (8 each, as the stand-in's grounding) and train on their "
                         "features too: --scene-fraction of each batch takes a view's features in place of the "
                         "sample's and the label of the robot that took that view and moved as the sample did "
                         "(needs --labels sim-expert); 0: none")
    ap.add_argument("--scene-fraction", type=float, default=0.25,
                    help="share of each training batch given --scene-tasks views (0-1)")
    ap.add_argument("--patience", type=int, default=8, help="epochs without validation improvement before stopping")
    ap.add_argument("--sample-dt", type=float, default=0.02, help="s between training samples in a bag")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "mobile_vla_ros" / "features")
    ap.add_argument("--resume", action="store_true", help=f"continue from --out/{STATE_FILE}")
    ap.add_argument("--name", default=None, help="model name in model.yaml (default: --out's name)")
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors("mobile-vla-train", _run, _parser().parse_args(argv),
                                (BagError, ModelSpecError, ValueError), after_progress=True)


def _run(args) -> int:
    import torch

    from ...paths import default_model_dir
    from ..deploy.export import write_model_dir

    dist = init_distributed()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // dist.world))
    _check_args(args, dist)
    lo_hi = staleness_range(args.staleness, args.vlm_hz, args.vlm_latency)
    vlm_path = args.vlm_model_path or default_model_dir() / "vlm"
    extractor, key = _extractor(args, vlm_path)
    bags = find_bags(args.bags)
    spec = _initial_spec(args, extractor.feature_dim, sensor_type_of(bags[0], args.sensor_topic)
                         if args.sensor_type == "auto" else args.sensor_type, lo_hi)
    bags, val_bags = _split(args, bags)
    train, val = (_dataset(args, group, label, spec, extractor, key, dist)
                  for group, label in ((bags, "train"), (val_bags, "val")))
    if dist.rank == 0:
        print(f"\n{len(bags)} training bags ({len(train)} samples), {len(val_bags)} validation bags "
              f"({len(val)} samples); staleness {lo_hi[0]:.3f}-{lo_hi[1]:.3f} s; {dist.world} process(es)")
    spec.normalization = _normalization(train, spec, lo_hi, args.seed)
    scenes = _scenes(args, extractor, key, dist)
    trainer = Trainer(args, spec, train, val, dist, scenes)
    args.out.mkdir(parents=True, exist_ok=True)
    state_path = args.out / STATE_FILE
    if args.resume:
        if not state_path.is_file():
            raise ValueError(f"--resume: no {state_path}")
        trainer.load(torch.load(state_path, map_location=dist.device, weights_only=False))
        if dist.rank == 0:
            print(f"resumed after epoch {trainer.epoch}")
    trainer.fit(state_path)
    if dist.rank == 0:
        _write_outputs(args, spec, trainer, train, val, vlm_path, write_model_dir)
    del trainer  # its DDP reducer holds the process group: Distributed.close
    dist.close()
    return 0


def _check_args(args, dist) -> None:
    if len(args.action_names) != len(args.twist_mapping):
        raise ValueError(f"--twist-mapping: expected {len(args.action_names)} fields (one per action name), "
                         f"got {len(args.twist_mapping)}")
    if not 0.0 <= args.sensor_dropout <= 1.0:
        raise ValueError(f"--sensor-dropout: expected a fraction in [0, 1], got {args.sensor_dropout}")
    if args.sensor_noise < 0:
        raise ValueError(f"--sensor-noise: expected a scale >= 0, got {args.sensor_noise}")
    if not 0.0 <= args.turn_augment <= 1.0:
        raise ValueError(f"--turn-augment: expected a fraction in [0, 1], got {args.turn_augment}")
    if args.turn_augment_max_age is not None and args.turn_augment_max_age <= 0:
        raise ValueError(f"--turn-augment-max-age: expected seconds > 0, got {args.turn_augment_max_age}")
    if args.geometry_head and (args.labels != "sim-expert" or not args.motion_input):
        raise ValueError("--geometry-head: its targets come from the simulator's ground truth and it moves them "
                         "by the motion since the image (needs --labels sim-expert and the motion input)")
    if args.mode_gate and args.labels != "sim-expert":
        raise ValueError("--mode-gate: which branch a sample's label takes comes from the simulator's ground truth "
                         f"(needs --labels sim-expert, got --labels {args.labels})")
    if args.turn_augment > 0 and (args.labels != "sim-expert" or not args.motion_input):
        raise ValueError("--turn-augment: turned samples need --labels sim-expert (labels recomputed from the "
                         "pose) and the motion input (which carries the turn); got "
                         f"--labels {args.labels}{'' if args.motion_input else ' --no-motion-input'}")
    if not 0.0 <= args.scene_fraction <= 1.0:
        raise ValueError(f"--scene-fraction: expected a fraction in [0, 1], got {args.scene_fraction}")
    if args.scene_tasks < 0:
        raise ValueError(f"--scene-tasks: expected a number of tasks >= 0, got {args.scene_tasks}")
    if args.scene_tasks and args.labels != "sim-expert":
        raise ValueError("--scene-tasks: a view's label is the sim expert's from where the robot has moved since it "
                         f"(needs --labels sim-expert, got --labels {args.labels})")
    if args.batch_size % dist.world:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {dist.world} processes")


def _extractor(args, vlm_path: Path):
    """The VLM the features come from (CPU, FP32: the cache must not depend on the machine) and the
    identity of its feature function (the cache key)."""
    from ...vlm.base import ExtractorConfig, VlmLoadError
    from ...vlm.factory import create_extractor

    cfg = ExtractorConfig(backend=args.vlm_backend, pooling=args.pooling, model_path=str(vlm_path),
                          clip_model_path=args.clip_model_path, device="cpu", dtype="fp32")
    try:
        return create_extractor(cfg), vlm_key(cfg, vlm_path)
    except VlmLoadError as exc:
        raise ValueError(str(exc)) from exc


def _initial_spec(args, feature_dim: int, sensor_type: str, lo_hi: tuple[float, float]) -> ModelSpec:
    """model.yaml from the arguments, with identity normalisation until the data's is known."""
    channels, actions = len(SENSOR_CHANNELS[sensor_type]), len(args.action_names)
    return ModelSpec(name=args.name or args.out.name, feature_dim=feature_dim, sensor_type=sensor_type,
                     sensor_window=args.sensor_window, sensor_hz=args.sensor_hz, chunk_size=args.chunk_size,
                     action_names=list(args.action_names), action_dt=args.action_dt,
                     normalization=Normalization([0.0] * channels, [1.0] * channels, [0.0] * actions,
                                                 [1.0] * actions),
                     vlm_backend=args.vlm_backend, vlm_pooling=args.pooling, staleness_range=lo_hi,
                     motion_input=MOTION_INPUT if args.motion_input else None,
                     architecture={"hidden_dim": args.hidden_dim,
                                   **{name: True for name in ("geometry_head", "mode_gate") if getattr(args, name)}})


def _split(args, bags: list[Path]) -> tuple[list[Path], list[Path]]:
    """Training and validation bags: --val-bags, else the last --val-fraction of --bags."""
    if args.val_bags:
        return bags, find_bags(args.val_bags)
    n_val = max(1, round(len(bags) * args.val_fraction))
    if n_val >= len(bags):
        raise ValueError(f"need at least 2 bags to hold some out for validation, got {len(bags)}")
    return bags[:-n_val], bags[-n_val:]


def _dataset(args, group: list[Path], label: str, spec: ModelSpec, extractor, key: str, dist) -> Dataset:
    """Read the bags and their VL features (rank 0 fills the feature cache, the others read it)."""
    topics = {"image": args.image_topic, "sensor": args.sensor_topic, "instruction": args.instruction_topic,
              "action": args.action_topic, "executed": args.executed_topic}
    if args.labels == "sim-expert":
        topics |= SIM_TRUTH_TOPICS
    recs, feats = [], []
    for i, bag in enumerate(group):
        rec = read_recording(bag, spec, topics, list(args.twist_mapping))
        if not rec.images:
            raise BagError(f"{bag}: no usable images on {args.image_topic}")
        if not rec.instructions:
            raise BagError(f"{bag}: no instruction on {args.instruction_topic}")
        if dist.rank == 0:
            feats.append(bag_features(rec, extractor, args.cache_dir, key, lambda fraction, i=i: progress_bar(
                f"VLM features {label} {i + 1}/{len(group)}", (i + fraction) / len(group))))
            _drop_pixels(rec)
        recs.append(rec)
    dist.barrier()
    if dist.rank != 0:
        feats = [bag_features(rec, extractor, args.cache_dir, key) for rec in recs]
        for rec in recs:
            _drop_pixels(rec)
    return build_dataset(recs, feats, spec, args.sample_dt, list(args.twist_mapping), args.labels)


def _scenes(args, extractor, key: str, dist) -> SceneSamples | None:
    """--scene-tasks' views and features (rank 0 renders and fills the cache, the others read it)."""
    if not args.scene_tasks:
        return None
    if dist.rank == 0:
        scenes = scene_samples(extractor, key, args.scene_tasks, args.cache_dir, os.cpu_count() or 1,
                               lambda fraction: progress_bar("scene views", fraction))
        shown = scenes.shows_target(np.arange(len(scenes))).mean()
        print(f"\n{len(scenes)} scene views of {args.scene_tasks} tasks ({shown:.0%} show the target), "
              f"{args.scene_fraction:g} of each batch")
    dist.barrier()
    if dist.rank != 0:
        scenes = scene_samples(extractor, key, args.scene_tasks, args.cache_dir)
    return scenes


def _normalization(train: Dataset, spec: ModelSpec, lo_hi: tuple[float, float], seed: int) -> Normalization:
    """Input and output statistics of the training set; the motion input's under the training
    staleness distribution."""
    every = np.arange(len(train))
    images = train.feature_index(every, np.random.default_rng(seed).uniform(*lo_hi, len(train)))
    actions = train.labels(every, images).reshape(-1, spec.action_dim)
    norm = Normalization(
        sensor_mean=train.sensor.mean(axis=0).tolist(), sensor_std=(train.sensor.std(axis=0) + 1e-3).tolist(),
        action_mean=actions.mean(axis=0).tolist(), action_std=(actions.std(axis=0) + 1e-3).tolist())
    if spec.motion_input:
        motion = train.motion(every, images)
        norm.motion_mean = motion.mean(axis=0).tolist()
        norm.motion_std = (motion.std(axis=0) + 1e-3).tolist()
    return norm


def _drop_pixels(rec: Recording) -> None:
    """Once a bag's features exist only its image times are needed (pixels of 300 bags: ~10 GB)."""
    rec.images = [(t, None) for t, _ in rec.images]


def _write_outputs(args, spec, trainer, train, val, vlm_path: Path, write_model_dir) -> None:
    model = trainer.model.cpu()
    model.load_state_dict(trainer.best_state)
    every = np.arange(len(val))
    labels = val.labels(every, val.feature_index(every, trainer.val_staleness))  # what validation scored against
    baseline = np.abs(labels).mean()
    mean_action = np.asarray(spec.normalization.action_mean, dtype=np.float32)
    lo, hi = args.turn_augment_range
    younger = "" if args.turn_augment_max_age is None else f" (features younger than {args.turn_augment_max_age:g} s)"
    turned = f", {args.turn_augment:g} of them{younger} turned by {lo:g} to {hi:g} rad" if args.turn_augment else ""
    head = (", with the geometry head" if args.geometry_head else "") + (", mode gate" if args.mode_gate else "")
    noisy = f", fresh sensor noise x{args.sensor_noise:g}" if args.sensor_noise else ""
    scenes = (f", {args.scene_fraction:g} of each batch with views of {args.scene_tasks} rendered tasks"
              if args.scene_tasks else "")
    spec.notes = (f"trained by mobile-vla-train ({args.labels} labels{head}, {args.loss} loss) on {len(train)} "
                  f"samples{turned}{noisy}{scenes}; "
                  f"best val MAE (chunk) {trainer.best:.4f} (zero action {baseline:.4f}, mean action "
                  f"{np.abs(labels - mean_action).mean():.4f})")
    error = write_model_dir(model, spec, args.out, extra={"history": trainer.history})
    if Path(vlm_path).resolve() != (args.out / "vlm").resolve():
        shutil.copytree(vlm_path, args.out / "vlm", dirs_exist_ok=True)
    report = {"best_val_mae_chunk": trainer.best, "val_zero_action_mae": float(baseline),
              "val_mean_action_mae": float(np.abs(labels - mean_action).mean()), "labels": args.labels,
              "loss": args.loss, "staleness_range": list(spec.staleness_range),
              "turn_augment": {"fraction": args.turn_augment, "range_rad": list(args.turn_augment_range),
                               "max_age_s": args.turn_augment_max_age},
              "sensor_noise": {"scale": args.sensor_noise, "channel_noise_std": trainer.channel_noise.tolist()},
              "scene_samples": {"tasks": args.scene_tasks, "views_per_task": VIEWS_PER_TASK, "render_seed": SCENE_SEED,
                                "fraction": args.scene_fraction if args.scene_tasks else 0.0},
              "geometry_head": args.geometry_head, "mode_gate": args.mode_gate, "epochs": trainer.epoch,
              "history": trainer.history, "onnx_max_abs_error": error}
    (args.out / "train_report.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}: action_expert.pt, action_expert.onnx (max |ONNX - PyTorch| {error:.1e}), model.yaml, "
          f"vlm/, train_report.json; best val MAE {trainer.best:.4f} (zero action {baseline:.4f})")


if __name__ == "__main__":
    raise SystemExit(main())
