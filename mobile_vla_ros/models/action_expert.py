"""The action expert: (VL features, sensor window) -> K-step action chunk, as a plain nn.Module.

Normalisation statistics are buffers of the module, so the exported ONNX graph takes raw sensor
values and returns actions in robot units; every backend therefore runs the same arithmetic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.model_spec import ModelSpec, Normalization

# What the geometry head predicts about the features' image: the logit of "the target is in view"
# and, when it is, the target's position in the body frame at the image (x ahead, y left, m / GEOMETRY_SCALE).
GEOMETRY_LAYOUT = ("in_view_logit", "x", "y")
GEOMETRY_SCALE = 4.0  # m: the farthest targets


@dataclass
class ActionExpertConfig:
    feature_dim: int = 64
    sensor_channels: int = 6
    sensor_window: int = 65
    chunk_size: int = 8
    action_dim: int = 2
    hidden_dim: int = 128
    head: str = "conv_mlp"  # "conv_mlp" (default) | "recurrent" (an LSTM 2048->4096 + MLP: the reference shape)
    recurrent_hidden: int = 4096
    recurrent_steps: int = 8  # the sensor window is encoded into this many tokens for the LSTM
    motion_dim: int = 0  # > 0: a third input, the motion since the features' source image (core/motion.py)
    # The features also predict where the target was in their image (GEOMETRY_LAYOUT, supervised in
    # training with the simulator's ground truth); moved by the motion since the image, that estimate
    # enters the fusion head. Needs the motion input.
    geometry_head: bool = False
    # Two chunk heads, one for each branch of the labels' rule (steer to the target the image shows, or
    # search), and a gate on the features that picks one by "the image shows the target" (supervised in
    # training with the simulator's ground truth). One head trained on both branches averages them where
    # the features leave it unsure: near the image's right edge "steer right" and "search
    # counter-clockwise" cancel into "straight on".
    mode_gate: bool = False

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ActionExpertConfig:
        known = {"hidden_dim", "head", "recurrent_hidden", "recurrent_steps", "geometry_head", "mode_gate"}
        arch = {k: v for k, v in spec.architecture.items() if k in known}
        return cls(feature_dim=spec.feature_dim, sensor_channels=spec.sensor_channels,
                   sensor_window=spec.sensor_window, chunk_size=spec.chunk_size,
                   action_dim=spec.action_dim, motion_dim=spec.motion_dim, **arch)


class _Normalized(nn.Module):
    """Raw-unit forward around `forward_normalized`; the statistics are buffers, so they are exported."""

    def _register_normalization(self, channels: int, actions: int, motion: int = 0) -> None:
        self.register_buffer("sensor_mean", torch.zeros(channels))
        self.register_buffer("sensor_std", torch.ones(channels))
        self.register_buffer("action_mean", torch.zeros(actions))
        self.register_buffer("action_std", torch.ones(actions))
        self.register_buffer("motion_mean", torch.zeros(motion))
        self.register_buffer("motion_std", torch.ones(motion))

    def _normalization_names(self) -> tuple[str, ...]:
        names = ("sensor_mean", "sensor_std", "action_mean", "action_std")
        return names + (("motion_mean", "motion_std") if self.config.motion_dim else ())

    def set_normalization(self, norm: Normalization) -> None:
        for name in self._normalization_names():
            getattr(self, name).copy_(torch.tensor(getattr(norm, name), dtype=torch.float32))

    def normalization(self) -> Normalization:
        return Normalization(**{n: getattr(self, n).tolist() for n in self._normalization_names()})

    def forward_normalized(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                           motion_norm: torch.Tensor | None = None) -> torch.Tensor:
        return self.predict_normalized(vl_features, sensor_norm, motion_norm)[0]

    def predict_normalized(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                           motion_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (normalised actions [B, K, D], the geometry head's prediction [B, 3] or None)."""
        raise NotImplementedError

    def predict_modes(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                      motion_norm: torch.Tensor | None = None):
        """-> (normalised steer chunk, normalised search chunk [B, K, D], gate logit [B], geometry or None):
        both heads of a `mode_gate` model before the gate picks one."""
        raise ValueError("this model has one chunk head (no mode_gate)")

    def forward(self, vl_features: torch.Tensor, sensor_window: torch.Tensor,
                motion: torch.Tensor | None = None, return_geometry: bool = False, return_modes: bool = False):
        """Raw units in and out; `return_geometry` (training) also returns the geometry head's output;
        `return_modes` (training a mode_gate model) returns (steer chunk, search chunk, gate logit, geometry)."""
        sensor_norm = (sensor_window - self.sensor_mean) / self.sensor_std
        motion_norm = None if motion is None else (motion - self.motion_mean) / self.motion_std
        if return_modes:
            steer, search, gate, geometry = self.predict_modes(vl_features, sensor_norm, motion_norm)
            return (steer * self.action_std + self.action_mean, search * self.action_std + self.action_mean,
                    gate, geometry)
        actions, geometry = self.predict_normalized(vl_features, sensor_norm, motion_norm)
        actions = actions * self.action_std + self.action_mean
        return (actions, geometry) if return_geometry else actions


class ActionExpert(_Normalized):
    """VL-feature projection + 1-D conv sensor encoder + MLP fusion head emitting K×D actions."""

    def __init__(self, config: ActionExpertConfig) -> None:
        super().__init__()
        self.config = config
        c, h = config, config.hidden_dim
        self.feature_proj = nn.Sequential(nn.LayerNorm(c.feature_dim), nn.Linear(c.feature_dim, h), nn.GELU())
        self.sensor_encoder = nn.Sequential(
            nn.Conv1d(c.sensor_channels, h // 2, kernel_size=5, stride=2, padding=2), nn.GELU(),
            nn.Conv1d(h // 2, h, kernel_size=5, stride=2, padding=2), nn.GELU(),
        )
        self.sensor_proj = nn.Linear(h, h)
        # The motion since the image enters the fusion head beside the features it corrects.
        self.motion_proj = (nn.Sequential(nn.Linear(c.motion_dim, h), nn.GELU(), nn.Linear(h, h), nn.GELU())
                            if c.motion_dim else None)
        fused = (3 if c.motion_dim else 2) * h
        self.geometry = self.geometry_proj = None
        if c.geometry_head:
            if not c.motion_dim:
                raise ValueError("geometry_head needs the motion input (motion_dim > 0): it moves the "
                                 "image's target estimate by the motion since the image")
            self.geometry = nn.Linear(h, len(GEOMETRY_LAYOUT))
            self.geometry_proj = nn.Sequential(nn.Linear(3, h), nn.GELU())
            fused += h
        heads = 2 if c.mode_gate else 1
        self.head = nn.Sequential(nn.Linear(fused, h), nn.GELU(), nn.Linear(h, heads * c.chunk_size * c.action_dim))
        self.gate = nn.Sequential(nn.Linear(h, h), nn.GELU(), nn.Linear(h, 1)) if c.mode_gate else None
        self._register_normalization(c.sensor_channels, c.action_dim, c.motion_dim)

    def predict_normalized(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                           motion_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normalised sensor window [B, W, C] (and motion [B, M]) -> normalised actions [B, K, D]."""
        if self.gate is None:
            out, _, geometry = self._heads(vl_features, sensor_norm, motion_norm)
            return out.view(-1, self.config.chunk_size, self.config.action_dim), geometry
        steer, search, gate, geometry = self.predict_modes(vl_features, sensor_norm, motion_norm)
        return self.pick_mode(steer, search, gate), geometry

    @staticmethod
    def pick_mode(steer: torch.Tensor, search: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """The chunk a mode_gate model outputs: the steer head's where the gate's logit says the image
        shows the target, else the search head's (never a mixture)."""
        return torch.where((gate > 0)[:, None, None], steer, search)

    def predict_modes(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                      motion_norm: torch.Tensor | None = None):
        if self.gate is None:
            return super().predict_modes(vl_features, sensor_norm, motion_norm)
        out, f, geometry = self._heads(vl_features, sensor_norm, motion_norm)
        steer, search = out.view(-1, 2, self.config.chunk_size, self.config.action_dim).unbind(1)
        return steer, search, self.gate(f)[:, 0], geometry

    def _heads(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor, motion_norm: torch.Tensor | None):
        """-> (the chunk heads' output [B, heads * K * D], the projected features, geometry or None)."""
        f = self.feature_proj(vl_features)
        s = self.sensor_encoder(sensor_norm.transpose(1, 2)).mean(dim=2)
        s = self.sensor_proj(s)
        parts = [f, s]
        if self.motion_proj is not None:
            if motion_norm is None:
                raise ValueError(f"this model takes a third input, the motion since the image [B, "
                                 f"{self.config.motion_dim}]")
            parts.append(self.motion_proj(motion_norm))
        geometry = None
        if self.geometry is not None:
            geometry = self.geometry(f)
            motion = motion_norm * self.motion_std + self.motion_mean
            parts.append(self.geometry_proj(self._target_now(geometry, motion)))
        return self.head(torch.cat(parts, dim=1)), f, geometry

    @staticmethod
    def _target_now(geometry: torch.Tensor, motion: torch.Tensor) -> torch.Tensor:
        """[B, 3]: P(in view) and that probability times the target's position now (body frame, /
        GEOMETRY_SCALE): the image's estimate less the translation since, rotated by the turn since."""
        in_view = torch.sigmoid(geometry[:, 0:1])
        x = geometry[:, 1:2] - motion[:, 1:2] / GEOMETRY_SCALE
        y = geometry[:, 2:3] - motion[:, 2:3] / GEOMETRY_SCALE
        cos, sin = torch.cos(motion[:, 3:4]), torch.sin(motion[:, 3:4])
        return torch.cat([in_view, in_view * (cos * x + sin * y), in_view * (-sin * x + cos * y)], dim=1)


class RecurrentActionExpert(_Normalized):
    """The seeds' head shape: an LSTM feature_dim (2048) -> recurrent_hidden (4096) over tokens that
    fuse the VL features with `recurrent_steps` segments of the sensor window, then an MLP to K×D.
    Kept to load checkpoints of that shape and as the reference row of the inference benchmark."""

    def __init__(self, config: ActionExpertConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.segment = c.sensor_window // c.recurrent_steps  # samples per token (the oldest remainder is unused)
        self.sensor_tokens = nn.Conv1d(c.sensor_channels, c.feature_dim, kernel_size=self.segment,
                                       stride=self.segment)
        self.lstm = nn.LSTM(c.feature_dim, c.recurrent_hidden, batch_first=True)
        self.head = nn.Sequential(nn.Linear(c.recurrent_hidden, 1024), nn.GELU(),
                                  nn.Linear(1024, c.chunk_size * c.action_dim))
        if c.motion_dim or c.geometry_head or c.mode_gate:
            raise ValueError("the recurrent head takes no motion input (motion_dim must be 0, no geometry_head, "
                             "no mode_gate)")
        self._register_normalization(c.sensor_channels, c.action_dim)

    def predict_normalized(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor,
                           motion_norm: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        newest = sensor_norm[:, -self.segment * self.config.recurrent_steps :]
        tokens = self.sensor_tokens(newest.transpose(1, 2)).transpose(1, 2) + vl_features.unsqueeze(1)
        out, _ = self.lstm(tokens)
        return self.head(out[:, -1]).view(-1, self.config.chunk_size, self.config.action_dim), None


def geometry_loss(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """The geometry head's loss: binary cross-entropy of "in view", plus the squared error of the
    target's position (in GEOMETRY_SCALE units) over the images that show it. `truth` [B, 3]: in view
    (0/1), x, y in m (InformedLabels.image_geometry)."""
    in_view = truth[:, 0]
    seen = nn.functional.binary_cross_entropy_with_logits(predicted[:, 0], in_view)
    position = ((predicted[:, 1:] - truth[:, 1:] / GEOMETRY_SCALE) ** 2).sum(dim=1)
    return seen + (position * in_view).sum() / in_view.sum().clamp(min=1.0)


def mode_gate_loss(steer: torch.Tensor, search: torch.Tensor, gate: torch.Tensor, in_view: torch.Tensor,
                   target: torch.Tensor, action_loss) -> torch.Tensor:
    """A mode_gate model's loss on normalised chunks [B, K, D]: each head against the labels of the
    samples of its branch (`in_view` [B], 0/1: the sample's image shows the target), plus the gate's
    binary cross-entropy of that branch. `action_loss`: torch.nn.functional's mse_loss or l1_loss."""
    steer_error = action_loss(steer, target, reduction="none").mean(dim=(1, 2))
    search_error = action_loss(search, target, reduction="none").mean(dim=(1, 2))
    branch = in_view * steer_error + (1 - in_view) * search_error
    return branch.mean() + nn.functional.binary_cross_entropy_with_logits(gate, in_view)


def build_action_expert(config: ActionExpertConfig) -> nn.Module:
    heads = {"conv_mlp": ActionExpert, "recurrent": RecurrentActionExpert}
    if config.head not in heads:
        raise ValueError(f"head: expected one of {', '.join(heads)}, got {config.head!r}")
    return heads[config.head](config)


def save_checkpoint(model: nn.Module, path: Path, extra: dict[str, Any] | None = None) -> None:
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = build_action_expert(ActionExpertConfig(**payload["config"]))
    state = payload["state_dict"]
    for name in ("motion_mean", "motion_std"):  # checkpoints from before the motion input lack them
        state.setdefault(name, getattr(model, name))
    model.load_state_dict(state)
    model.eval()
    return model, payload
