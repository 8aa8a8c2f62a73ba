"""The action expert's backend by name: `create_backend(kind, model_dir, spec)`, with `auto` trying
TensorRT > ONNX Runtime > PyTorch. Kept apart from the backends so that none of them imports another."""

from __future__ import annotations

from pathlib import Path

from .backends import BackendUnavailable, InferenceBackend, OnnxRuntimeBackend, TorchBackend, tensorrt_usable
from .model_spec import ModelSpec


def create_backend(kind: str, model_dir: str | Path, spec: ModelSpec,
                   engine_cache_dir: str | Path | None = None, log=None) -> InferenceBackend:
    """Create the backend `kind` (auto|tensorrt|onnxruntime|torch) for the model in `model_dir`."""
    model_dir = Path(model_dir)
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTBackend  # imports TensorRT's Python modules

        return TensorRTBackend(model_dir, spec, engine_cache_dir, log=log)
    if kind == "onnxruntime":
        return OnnxRuntimeBackend(model_dir, spec)
    if kind == "torch":
        return TorchBackend(model_dir, spec)
    if kind != "auto":
        raise ValueError(f"backend: {kind!r} is not one of auto, tensorrt, onnxruntime, torch")
    tried = []
    for candidate in ("tensorrt", "onnxruntime", "torch"):
        if candidate == "tensorrt" and not tensorrt_usable():
            tried.append("tensorrt: not installed")
            continue
        try:
            return create_backend(candidate, model_dir, spec, engine_cache_dir, log)
        except BackendUnavailable as exc:
            tried.append(f"{candidate}: {exc}")
    raise BackendUnavailable("no backend can run this model: " + "; ".join(tried))
