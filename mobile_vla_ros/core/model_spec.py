"""`model.yaml` of an action-expert model directory, and the start-up checks against it.

The spec is the single description of a model's interface (dims, rates, names, normalisation,
the VLM it expects); node parameters and the ONNX graph are checked against it so a mismatch
stops start-up with "expected vs got" instead of producing wrong actions.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .motion import MOTION_DIM, MOTION_LAYOUT
from .sensor_window import SENSOR_CHANNELS

MODEL_YAML = "model.yaml"
ONNX_FILE = "action_expert.onnx"
TORCH_FILE = "action_expert.pt"
INPUT_FEATURES, INPUT_SENSOR, OUTPUT_ACTIONS = "vl_features", "sensor_window", "actions"
FORMAT_VERSION = 1


class ModelSpecError(ValueError):
    """A model directory, model.yaml or graph that does not fit; the message says expected vs got."""


@dataclass
class Normalization:
    """Per-channel mean/std; baked into the exported graph, recorded here for training and checks."""

    sensor_mean: list[float]
    sensor_std: list[float]
    action_mean: list[float]
    action_std: list[float]
    motion_mean: list[float] = field(default_factory=list)  # only for models with the motion input
    motion_std: list[float] = field(default_factory=list)


@dataclass
class ModelSpec:
    name: str
    feature_dim: int
    sensor_type: str
    sensor_window: int
    sensor_hz: float
    chunk_size: int
    action_names: list[str]
    action_dt: float
    normalization: Normalization
    vlm_backend: str = "kosmos2"
    vlm_pooling: str = "last_token"
    feature_tokens: int = 1
    staleness_range: tuple[float, float] = (0.0, 0.0)
    # Name of the optional third graph input (None: a two-input model); its layout is MOTION_LAYOUT.
    motion_input: str | None = None
    architecture: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def sensor_channels(self) -> int:
        return len(SENSOR_CHANNELS[self.sensor_type])

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def motion_dim(self) -> int:
        return MOTION_DIM if self.motion_input else 0

    def to_yaml_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "feature_dim": self.feature_dim,
            "feature_tokens": self.feature_tokens,
            "sensor_type": self.sensor_type,
            "sensor_channels": self.sensor_channels,
            "sensor_window": self.sensor_window,
            "sensor_hz": self.sensor_hz,
            "chunk_size": self.chunk_size,
            "action_names": list(self.action_names),
            "action_dt": self.action_dt,
            "normalization": {k: v for k, v in asdict(self.normalization).items() if v or not k.startswith("motion")},
            "vlm": {"backend": self.vlm_backend, "pooling": self.vlm_pooling},
            "training": {"staleness_range": list(self.staleness_range)},
            **({"motion_input": {"name": self.motion_input, "layout": list(MOTION_LAYOUT),
                                 "frame": "body frame at the features' source image"}}
               if self.motion_input else {}),
            "architecture": dict(self.architecture),
            "notes": self.notes,
        }

    def save(self, model_dir: Path) -> Path:
        path = Path(model_dir) / MODEL_YAML
        path.write_text(yaml.safe_dump(self.to_yaml_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelSpec:
        path = Path(model_dir) / MODEL_YAML
        if not path.is_file():
            raise ModelSpecError(f"{path}: missing (a model directory needs {MODEL_YAML} and {ONNX_FILE})")
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ModelSpecError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(raw, dict):
            raise ModelSpecError(f"{path}: expected a mapping, got {type(raw).__name__}")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = MODEL_YAML) -> ModelSpec:
        def need(key: str, kind: type | tuple[type, ...], where: dict[str, Any] = raw, prefix: str = ""):
            if key not in where:
                raise ModelSpecError(f"{source}: missing key '{prefix}{key}'")
            value = where[key]
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                kinds = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
                raise ModelSpecError(f"{source}: '{prefix}{key}' expected {kinds}, got {value!r}")
            return value

        version = raw.get("format_version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise ModelSpecError(f"{source}: format_version expected {FORMAT_VERSION}, got {version}")
        sensor_type = need("sensor_type", str)
        if sensor_type not in SENSOR_CHANNELS:
            raise ModelSpecError(f"{source}: sensor_type expected one of {sorted(SENSOR_CHANNELS)}, "
                                 f"got {sensor_type!r}")
        norm = need("normalization", dict)
        normalization = Normalization(**{k: [float(v) for v in need(k, list, norm, "normalization.")]
                                         for k in ("sensor_mean", "sensor_std", "action_mean", "action_std")},
                                      **{k: [float(v) for v in norm.get(k, [])] for k in ("motion_mean", "motion_std")})
        motion = raw.get("motion_input")
        if motion is not None:
            if not isinstance(motion, dict) or not isinstance(motion.get("name"), str):
                raise ModelSpecError(f"{source}: motion_input expected a mapping with a 'name', got {motion!r}")
            layout = list(motion.get("layout", MOTION_LAYOUT))
            if layout != list(MOTION_LAYOUT):
                raise ModelSpecError(f"{source}: motion_input.layout expected {list(MOTION_LAYOUT)}, got {layout}")
        vlm = raw.get("vlm") or {}
        training = raw.get("training") or {}
        spec = cls(
            name=str(raw.get("name", "")),
            feature_dim=need("feature_dim", int),
            feature_tokens=int(raw.get("feature_tokens", 1)),
            sensor_type=sensor_type,
            sensor_window=need("sensor_window", int),
            sensor_hz=float(need("sensor_hz", (int, float))),
            chunk_size=need("chunk_size", int),
            action_names=[str(n) for n in need("action_names", list)],
            action_dt=float(need("action_dt", (int, float))),
            normalization=normalization,
            vlm_backend=str(vlm.get("backend", "kosmos2")),
            vlm_pooling=str(vlm.get("pooling", "last_token")),
            staleness_range=tuple(float(v) for v in training.get("staleness_range", (0.0, 0.0))),
            motion_input=None if motion is None else motion["name"],
            architecture=dict(raw.get("architecture") or {}),
            notes=str(raw.get("notes", "")),
        )
        channels = raw.get("sensor_channels", spec.sensor_channels)
        if channels != spec.sensor_channels:
            raise ModelSpecError(f"{source}: sensor_channels expected {spec.sensor_channels} for sensor_type "
                                 f"{sensor_type}, got {channels}")
        for key, size in (("sensor_mean", spec.sensor_channels), ("sensor_std", spec.sensor_channels),
                          ("action_mean", spec.action_dim), ("action_std", spec.action_dim),
                          ("motion_mean", spec.motion_dim), ("motion_std", spec.motion_dim)):
            got = len(getattr(normalization, key))
            if got != size:
                raise ModelSpecError(f"{source}: normalization.{key} expected {size} values, got {got}")
        return spec


def check_params(spec: ModelSpec, params: dict[str, Any]) -> list[str]:
    """Mismatches between node parameters and model.yaml, each as 'name: expected X (model.yaml), got Y'."""
    problems = []
    expected = {
        "sensor_type": spec.sensor_type,
        "sensor_window": spec.sensor_window,
        "sensor_hz": spec.sensor_hz,
        "chunk_size": spec.chunk_size,
        "action_names": list(spec.action_names),
        "action_dt": spec.action_dt,
        "vlm_backend": spec.vlm_backend,
        "feature_pooling": spec.vlm_pooling,
    }
    for key, want in expected.items():
        if key not in params:
            continue
        got = params[key]
        if isinstance(want, float):
            same = abs(float(got) - want) <= 1e-9 * max(1.0, abs(want))
        elif isinstance(want, list):
            same = list(got) == want
        else:
            same = got == want
        if not same:
            problems.append(f"{key}: expected {want!r} (model.yaml), got {got!r} (node parameter)")
    for key in ("action_limits", "max_action_step", "twist_mapping"):
        if key in params and len(params[key]) != spec.action_dim:
            problems.append(f"{key}: expected {spec.action_dim} values (one per action {spec.action_names}), "
                            f"got {len(params[key])}")
    return problems


def input_shapes(spec: ModelSpec, batch: int | None = None) -> dict[str, tuple]:
    """Every graph input by name with its shape (batch first; None = dynamic)."""
    shapes = {INPUT_FEATURES: (batch, spec.feature_dim),
              INPUT_SENSOR: (batch, spec.sensor_window, spec.sensor_channels)}
    if spec.motion_input:
        shapes[spec.motion_input] = (batch, spec.motion_dim)
    return shapes


def check_onnx_io(spec: ModelSpec, inputs: dict[str, list], outputs: dict[str, list]) -> list[str]:
    """Compare graph I/O names and static dims (None/str = dynamic) against the spec."""
    want_in = {name: list(shape) for name, shape in input_shapes(spec).items()}
    want_out = {OUTPUT_ACTIONS: [None, spec.chunk_size, spec.action_dim]}
    problems = []
    for kind, want, got in (("input", want_in, inputs), ("output", want_out, outputs)):
        if set(want) != set(got):
            problems.append(f"{kind} names: expected {sorted(want)}, got {sorted(got)}")
            continue
        for name, dims in want.items():
            shape = got[name]
            fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
            if len(fixed) != len(dims) or any(w is not None and f != w for w, f in zip(dims, fixed)):
                problems.append(f"{kind} '{name}': expected shape {_fmt(dims)}, got {_fmt(fixed)}")
    return problems


def _fmt(dims: list) -> str:
    return "[" + ", ".join("B" if d is None else str(d) for d in dims) + "]"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
