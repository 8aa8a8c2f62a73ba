"""The feature-extractor interface and its factory: images + instruction -> float32 [tokens, dim]."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..core.params import VLM_BACKENDS

CONFIG_FILES = ("config.json", "preprocessor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "sentencepiece.bpe.model", "tokenizer.model", "vocab.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


class VlmLoadError(RuntimeError):
    """The VLM cannot be loaded as configured; the message names the file or value at fault."""


@dataclass
class ExtractorConfig:
    backend: str = "kosmos2"
    model_path: str = ""
    clip_model_path: str = ""
    device: str = "cpu"
    dtype: str = "fp32"
    pooling: str = "last_token"
    prompt: str = "<grounding>{instruction}"


class FeatureExtractor(Protocol):
    feature_dim: int

    def extract(self, images: list[np.ndarray], instruction: str) -> np.ndarray:
        """RGB uint8 images [H, W, 3] (one per view) -> float32 [1, feature_dim]."""
        ...


def check_model_dir(path: str | Path, what: str = "model_path") -> Path:
    """Fail early, naming the missing file, instead of deep inside transformers."""
    path = Path(path)
    if not path.is_dir():
        raise VlmLoadError(f"{what}: directory {path} does not exist")
    missing = [f for f in CONFIG_FILES if not (path / f).is_file()]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model weights (" + " or ".join(WEIGHT_FILES[::2]) + ")")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (" + " or ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise VlmLoadError(f"{what}: {path} is incomplete, missing: {', '.join(missing)}")
    return path


def check_model_type(path: Path, expected: str, what: str = "model_path") -> None:
    """transformers only warns when config.json is another architecture; we refuse."""
    try:
        got = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise VlmLoadError(f"{what}: {path / 'config.json'} is not readable JSON ({exc})") from exc
    if got != expected:
        raise VlmLoadError(f"{what}: expected a {expected} checkpoint (config.json model_type), got {got!r}")


def torch_dtype(name: str, device: str):
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    if name not in dtypes:
        raise VlmLoadError(f"dtype: {name!r} is not one of {', '.join(dtypes)}")
    if device == "cpu" and name != "fp32":
        raise VlmLoadError(f"dtype: {name} needs device cuda; use dtype fp32 on the cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VlmLoadError("device: cuda requested but torch.cuda.is_available() is False; set device: cpu")
    return dtypes[name]


def dtype_kwarg(dtype) -> dict:
    """`from_pretrained` takes `dtype` since transformers 4.56 and `torch_dtype` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def create_extractor(config: ExtractorConfig) -> FeatureExtractor:
    if config.backend == "kosmos2":
        from .kosmos2 import Kosmos2Extractor

        return Kosmos2Extractor(config)
    if config.backend in VLM_BACKENDS:
        raise VlmLoadError(f"vlm_backend: {config.backend} is not implemented yet; available now: kosmos2")
    raise VlmLoadError(f"vlm_backend: {config.backend!r} is not one of {', '.join(VLM_BACKENDS)}")
