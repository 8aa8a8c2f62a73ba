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


@dataclass
class ActionExpertConfig:
    feature_dim: int = 64
    sensor_channels: int = 6
    sensor_window: int = 65
    chunk_size: int = 8
    action_dim: int = 2
    hidden_dim: int = 128

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ActionExpertConfig:
        arch = {k: v for k, v in spec.architecture.items() if k in {"hidden_dim"}}
        return cls(feature_dim=spec.feature_dim, sensor_channels=spec.sensor_channels,
                   sensor_window=spec.sensor_window, chunk_size=spec.chunk_size,
                   action_dim=spec.action_dim, **arch)


class ActionExpert(nn.Module):
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
        self.head = nn.Sequential(nn.Linear(2 * h, h), nn.GELU(), nn.Linear(h, c.chunk_size * c.action_dim))
        self.register_buffer("sensor_mean", torch.zeros(c.sensor_channels))
        self.register_buffer("sensor_std", torch.ones(c.sensor_channels))
        self.register_buffer("action_mean", torch.zeros(c.action_dim))
        self.register_buffer("action_std", torch.ones(c.action_dim))

    def set_normalization(self, norm: Normalization) -> None:
        for name in ("sensor_mean", "sensor_std", "action_mean", "action_std"):
            getattr(self, name).copy_(torch.tensor(getattr(norm, name), dtype=torch.float32))

    def normalization(self) -> Normalization:
        return Normalization(**{n: getattr(self, n).tolist()
                                for n in ("sensor_mean", "sensor_std", "action_mean", "action_std")})

    def forward_normalized(self, vl_features: torch.Tensor, sensor_norm: torch.Tensor) -> torch.Tensor:
        """Normalised sensor window [B, W, C] -> normalised actions [B, K, D] (used in training)."""
        f = self.feature_proj(vl_features)
        s = self.sensor_encoder(sensor_norm.transpose(1, 2)).mean(dim=2)
        s = self.sensor_proj(s)
        out = self.head(torch.cat([f, s], dim=1))
        return out.view(-1, self.config.chunk_size, self.config.action_dim)

    def forward(self, vl_features: torch.Tensor, sensor_window: torch.Tensor) -> torch.Tensor:
        sensor_norm = (sensor_window - self.sensor_mean) / self.sensor_std
        return self.forward_normalized(vl_features, sensor_norm) * self.action_std + self.action_mean


def save_checkpoint(model: ActionExpert, path: Path, extra: dict[str, Any] | None = None) -> None:
    torch.save({"config": asdict(model.config), "state_dict": model.state_dict(), **(extra or {})}, path)


def load_checkpoint(path: Path, map_location: str = "cpu") -> tuple[ActionExpert, dict[str, Any]]:
    payload = torch.load(path, map_location=map_location, weights_only=True)
    model = ActionExpert(ActionExpertConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
