"""Inference backends of the action expert behind one interface: run(features, window) -> actions.

Backends: TensorRT (robot; tensorrt_backend), ONNX Runtime (CPU, or CUDA when available), PyTorch;
backend_factory.create_backend picks one (`auto`: TensorRT > ONNX Runtime > PyTorch by what is present).
Every backend checks its graph against model.yaml when it is created.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from .model_spec import (
    INPUT_FEATURES,
    INPUT_SENSOR,
    ONNX_FILE,
    OUTPUT_ACTIONS,
    TORCH_FILE,
    ModelSpec,
    ModelSpecError,
    check_onnx_io,
)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run here (library missing, no GPU, no model file)."""


class InferenceBackend(Protocol):
    name: str

    def run(self, vl_features: np.ndarray, sensor_window: np.ndarray,
            motion: np.ndarray | None = None) -> np.ndarray:
        """[B, F] float32, [B, W, C] float32 (, [B, M] float32 for models with the motion input)
        -> [B, K, D] float32."""
        ...


def graph_inputs(spec: ModelSpec, vl_features: np.ndarray, sensor_window: np.ndarray,
                 motion: np.ndarray | None) -> dict[str, np.ndarray]:
    """The model's inputs by name; a motion input is required exactly when model.yaml declares one."""
    feeds = {INPUT_FEATURES: vl_features, INPUT_SENSOR: sensor_window}
    if spec.motion_input:
        if motion is None:
            raise ValueError(f"the model takes '{spec.motion_input}' [B, {spec.motion_dim}] and none was given")
        feeds[spec.motion_input] = motion
    return feeds


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class OnnxRuntimeBackend:
    def __init__(self, model_dir: Path, spec: ModelSpec, use_cuda: bool = True, threads: int = 1) -> None:
        if not _installed("onnxruntime"):
            raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime or onnxruntime-gpu)")
        import onnxruntime as ort

        path = Path(model_dir) / ONNX_FILE
        if not path.is_file():
            raise BackendUnavailable(f"{path}: missing")
        options = ort.SessionOptions()
        # One thread: the graph is tiny, and on a 2-core robot computer the 650 Hz sensor callback
        # and the VLM need the other core more than the action expert needs a second one.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if use_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            raise ModelSpecError(f"{path}: ONNX Runtime cannot load it ({exc})") from exc
        problems = check_onnx_io(spec,
                                 {i.name: list(i.shape) for i in self._session.get_inputs()},
                                 {o.name: list(o.shape) for o in self._session.get_outputs()})
        if problems:
            raise ModelSpecError(f"{path} does not match model.yaml: " + "; ".join(problems))
        self.name = "onnxruntime-" + ("cuda" if providers[0].startswith("CUDA") else "cpu")
        self._spec = spec

    def run(self, vl_features: np.ndarray, sensor_window: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        return self._session.run([OUTPUT_ACTIONS], graph_inputs(self._spec, vl_features, sensor_window, motion))[0]


class TorchBackend:
    def __init__(self, model_dir: Path, spec: ModelSpec, device: str | None = None) -> None:
        if not _installed("torch"):
            raise BackendUnavailable("torch is not installed")
        import torch

        from ..models.action_expert import load_checkpoint

        path = Path(model_dir) / TORCH_FILE
        if not path.is_file():
            raise BackendUnavailable(f"{path}: missing (the torch backend needs the checkpoint)")
        self._torch = torch
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        model, _ = load_checkpoint(path)
        c = model.config
        got = {"feature_dim": c.feature_dim, "sensor_window": c.sensor_window,
               "sensor_channels": c.sensor_channels, "chunk_size": c.chunk_size, "action_dim": c.action_dim,
               "motion_dim": c.motion_dim}
        want = {"feature_dim": spec.feature_dim, "sensor_window": spec.sensor_window,
                "sensor_channels": spec.sensor_channels, "chunk_size": spec.chunk_size,
                "action_dim": spec.action_dim, "motion_dim": spec.motion_dim}
        problems = [f"{k}: expected {want[k]} (model.yaml), got {got[k]}" for k in want if want[k] != got[k]]
        if problems:
            raise ModelSpecError(f"{path} does not match model.yaml: " + "; ".join(problems))
        self._model = model.to(self._device).eval()
        self._spec = spec
        self.name = f"torch-{self._device}"

    def run(self, vl_features: np.ndarray, sensor_window: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        torch = self._torch
        feeds = graph_inputs(self._spec, vl_features, sensor_window, motion)
        with torch.inference_mode():
            out = self._model(*(torch.from_numpy(v).to(self._device) for v in feeds.values()))
        return out.float().cpu().numpy()


def tensorrt_installed() -> bool:
    """The TensorRT runtime, not just a `tensorrt` directory of type stubs (tensorrt-stubs installs one:
    a namespace package without code, which imports but has no Builder or Runtime)."""
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


def tensorrt_usable() -> bool:
    return tensorrt_installed() and (_installed("cuda") or _installed("pycuda"))
