"""TensorRT engine cache: where an engine for (ONNX graph, GPU, TensorRT version, precision) lives,
and the JSON sidecar that proves which build it is. Pure Python, so it is tested without TensorRT.

An engine only runs on the GPU model and TensorRT version it was built with; the key therefore
names all of them, and the sidecar is checked before an engine is deserialized.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CACHE = Path("~/.cache/mobile_vla_ros/engines")


@dataclass(frozen=True)
class EngineKey:
    onnx_sha256: str
    gpu_name: str
    compute_capability: str  # "8.7" on Orin, "9.0" on H100
    tensorrt_version: str
    precision: str

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def stem(self) -> str:
        gpu = re.sub(r"[^a-z0-9]+", "-", self.gpu_name.lower()).strip("-")
        return (f"action_expert_{self.onnx_sha256[:16]}_{gpu}_sm{self.compute_capability.replace('.', '')}"
                f"_trt{self.tensorrt_version}_{self.precision}")

    def engine_path(self, cache_dir: Path) -> Path:
        return Path(cache_dir).expanduser() / f"{self.stem}.engine"

    def sidecar_path(self, cache_dir: Path) -> Path:
        return Path(cache_dir).expanduser() / f"{self.stem}.json"

    def mismatches(self, recorded: dict) -> list[str]:
        """Fields of a sidecar that differ from this key, as 'field: expected X, got Y'."""
        return [f"{k}: expected {v!r}, got {recorded.get(k)!r}" for k, v in asdict(self).items()
                if recorded.get(k) != v]


def write_sidecar(key: EngineKey, cache_dir: Path, build_seconds: float, extra: dict | None = None) -> Path:
    path = key.sidecar_path(cache_dir)
    record = {**asdict(key), "build_seconds": round(build_seconds, 2),
              "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {})}
    path.write_text(json.dumps(record, indent=2))
    return path


def find_engine(key: EngineKey, cache_dir: Path) -> tuple[Path | None, list[str]]:
    """The cached engine for `key`, or None with the reasons a present one is unusable."""
    engine, sidecar = key.engine_path(cache_dir), key.sidecar_path(cache_dir)
    if not engine.is_file():
        return None, [f"{engine}: not built yet"]
    if not sidecar.is_file():
        return None, [f"{sidecar}: missing (engine of unknown origin)"]
    try:
        recorded = json.loads(sidecar.read_text())
    except ValueError as exc:
        return None, [f"{sidecar}: not valid JSON ({exc})"]
    problems = key.mismatches(recorded)
    return (None, problems) if problems else (engine, [])
