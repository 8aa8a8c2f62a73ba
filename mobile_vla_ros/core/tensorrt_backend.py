"""TensorRT runtime backend (TensorRT 10 Python API). Import-safe: nothing is imported from
tensorrt until a backend is created, so machines without TensorRT can import this package.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .backends import BackendUnavailable
from .model_spec import ModelSpec


class TensorRTBackend:
    def __init__(self, model_dir: Path, spec: ModelSpec, engine_cache_dir=None, log=None) -> None:
        if importlib.util.find_spec("tensorrt") is None:
            raise BackendUnavailable(
                "TensorRT is not installed (on Jetson it comes with JetPack: python3-libnvinfer); "
                "use backend onnxruntime or torch")
        # The engine builder and runtime (deserialize, set_tensor_address, execute_async_v3) are
        # tracked in the model-pipeline issue; until they land, TensorRT hosts fall back via `auto`.
        raise BackendUnavailable("the TensorRT runtime backend is not implemented yet; use onnxruntime")
