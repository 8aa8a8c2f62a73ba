"""The feature-extractor interface and its factory: images + instruction -> float32 [tokens, dim].

Backends (all loaded with `from_pretrained(local_dir, local_files_only=True)`; nothing downloads):
- kosmos2:      Kosmos-2 (patch14-224 layout); pooled hidden state of its text transformer
- kosmos2_clip: the kosmos2 features concatenated with CLIP vision pooled (projected) embeddings
- qwen2_5_vl:   Qwen2.5-VL (3B layout); pooled last-layer hidden state of its language model
Several camera views are one batched forward; the pooled per-view features are averaged, so the
feature size does not depend on the number of cameras.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..core.params import FEATURE_POOLINGS as POOLINGS

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
    prompt: str = ""  # "" = the backend's default; must contain {instruction}
    # On CUDA, the fixed-shape forward is captured once per (views, text length) as a CUDA graph:
    # one launch instead of ~1000 kernel launches from Python.
    cuda_graphs: bool = True
    text_bucket: int = 16  # text lengths are padded up to a multiple of this (fewer distinct graph shapes)
    # Resize/normalise (and Qwen's patch layout) as tensor ops on `device` (vlm/preprocess.py) instead
    # of the image processor's numpy path; False runs the processor (the reference).
    tensor_preprocessing: bool = True
    # torch.compile mode for the fixed-shape forward before its capture ("" = off, "default",
    # "max-autotune-no-cudagraphs"): fused kernels; the first forward per shape compiles.
    compile_mode: str = ""


class FeatureExtractor(Protocol):
    feature_dim: int

    def extract(self, images: list[np.ndarray], instruction: str) -> np.ndarray:
        """RGB uint8 images [H, W, 3] (one per view) -> float32 [1, feature_dim]."""
        ...


def check_model_dir(path: str | Path, what: str = "model_path", tokenizer: bool = True) -> Path:
    """Fail early, naming the missing file, instead of deep inside transformers."""
    if not str(path):
        raise VlmLoadError(f"{what}: not set (a local model directory is required; nothing is downloaded)")
    path = Path(path)
    if not path.is_dir():
        raise VlmLoadError(f"{what}: directory {path} does not exist")
    missing = [f for f in CONFIG_FILES if not (path / f).is_file()]
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        missing.append("model weights (" + " or ".join(WEIGHT_FILES[::2]) + ")")
    if tokenizer and not any((path / f).is_file() for f in TOKENIZER_FILES):
        missing.append("tokenizer (" + " or ".join(TOKENIZER_FILES) + ")")
    if missing:
        raise VlmLoadError(f"{what}: {path} is incomplete, missing: {', '.join(missing)}")
    return path


def check_model_type(path: Path, expected: str | tuple[str, ...], what: str = "model_path") -> str:
    """transformers only warns when config.json is another architecture; we refuse."""
    try:
        got = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise VlmLoadError(f"{what}: {path / 'config.json'} is not readable JSON ({exc})") from exc
    accepted = (expected,) if isinstance(expected, str) else expected
    if got not in accepted:
        raise VlmLoadError(f"{what}: expected a {' or '.join(accepted)} checkpoint (config.json model_type), "
                           f"got {got!r}")
    return got


def check_pooling(pooling: str) -> None:
    if pooling not in POOLINGS:
        raise VlmLoadError(f"feature_pooling: {pooling!r} is not one of {', '.join(POOLINGS)}")


def from_local_dir(loader, path: Path, what: str, architecture: str, **kwargs):
    """`loader.from_pretrained(path, local_files_only=True, **kwargs)`; the errors transformers raises
    for unreadable files become a VlmLoadError naming the parameter and the directory."""
    try:
        return loader.from_pretrained(path, local_files_only=True, **kwargs)
    except (OSError, ValueError) as exc:
        raise VlmLoadError(f"{what}: {path} cannot be loaded as {architecture} ({exc})") from exc


def load_model(model_class, path: Path, what: str, architecture: str, dtype, device: str,
               int8_weights: bool = False):
    """Weights with SDPA attention in `dtype` on `device`, in eval mode; a checkpoint lacking any
    weight is refused (transformers would silently initialise it at random). Patch-embedding
    convolutions run as matmuls (vlm/patch_embed.py) and MLP hidden layers are padded to whole
    64-channel tiles (vlm/mlp_padding.py). `int8_weights`: linear layers and embedding tables stored
    as int8 afterwards (vlm/int8_weights.py)."""
    model, info = from_local_dir(model_class, path, what, architecture, output_loading_info=True,
                                 attn_implementation="sdpa", **dtype_kwarg(dtype))
    if info["missing_keys"]:
        raise VlmLoadError(f"{what}: {path} lacks weights for {len(info['missing_keys'])} tensors, "
                           f"e.g. {info['missing_keys'][0]} (not a {architecture} checkpoint?)")
    model = model.to(device).eval()
    from .mlp_padding import pad_mlp_hidden
    from .patch_embed import use_matmul_patch_embeddings

    use_matmul_patch_embeddings(model)
    pad_mlp_hidden(model)
    if int8_weights:
        from .int8_weights import quantise_weights

        done = quantise_weights(model, dtype)
        logging.getLogger(__name__).info(
            "%s: int8 weights in %d linear layers and %d embedding tables (%s), %.1f -> %.1f MB", architecture,
            done["linear"] + done["tied"], done["embedding"], done["kernel"], done["bytes_before"] / 1e6,
            done["bytes_after"] / 1e6)
    return model


def torch_dtype(name: str, device: str):
    """The compute dtype of a `dtype` value; `int8w` (int8 weights) computes in fp16 on cuda and fp32
    on the cpu."""
    import torch

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32,
              "int8w": torch.float16 if device == "cuda" else torch.float32}
    if name not in dtypes:
        raise VlmLoadError(f"dtype: {name!r} is not one of {', '.join(dtypes)}")
    if device == "cpu" and name not in ("fp32", "int8w"):
        raise VlmLoadError(f"dtype: {name} needs device cuda; use dtype fp32 (or int8w) on the cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise VlmLoadError("device: cuda requested but torch.cuda.is_available() is False; set device: cpu")
    return dtypes[name]


def transformers_version() -> str:
    import transformers

    return transformers.__version__


def major_minor(version: str) -> tuple[int, int]:
    """(major, minor) of a version string."""
    major, minor = (int(x) for x in version.split(".")[:2])
    return major, minor


def check_transformers_below(architecture: str, below: tuple[int, int], version: str | None = None) -> None:
    """Refuses a transformers release (by default the installed one) whose model code an extractor's own
    forward no longer follows, at start-up instead of an IndexError deep inside transformers at the first
    forward."""
    version = version or transformers_version()
    if major_minor(version) >= below:
        raise VlmLoadError(f"{architecture}: needs transformers < {below[0]}.{below[1]} (tested with 4.57.6, as "
                           f"pinned in requirements/); found {version}")


def checked_vlm_dir(config: ExtractorConfig, architecture: str, model_type: str,
                    transformers_below: tuple[int, int]) -> tuple[Path, object]:
    """The start-up checks of an extractor that loads one transformers VLM from `config.model_path`:
    the installed transformers (below `transformers_below`), the pooling, the directory's files and its
    architecture; returns (the directory, the compute dtype)."""
    check_transformers_below(architecture, transformers_below)
    check_pooling(config.pooling)
    path = check_model_dir(config.model_path)
    check_model_type(path, model_type)
    return path, torch_dtype(config.dtype, config.device)


def dtype_kwarg(dtype) -> dict:
    """`from_pretrained` takes `dtype` since transformers 4.56 and `torch_dtype` before."""
    return {"dtype": dtype} if major_minor(transformers_version()) >= (4, 56) else {"torch_dtype": dtype}
