"""TensorRT runtime backend (TensorRT 10 Python API + cuda-python).

Import-safe: tensorrt and cuda are imported only when a backend is created, so machines without
them can import this package. Run path (TensorRT samples' common_runtime style): deserialize ->
execution context -> tensors bound by name with set_tensor_address -> execute_async_v3 on one
stream, pinned host buffers, optional CUDA-graph capture of the whole enqueue.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np

from .backends import BackendUnavailable, graph_inputs
from .engine_cache import DEFAULT_CACHE, EngineKey, find_engine
from .model_spec import ONNX_FILE, OUTPUT_ACTIONS, ModelSpec, ModelSpecError, file_sha256, input_shapes


def import_cudart():
    """cuda-python's runtime module: `cuda.bindings.runtime` (12.6+) or `cuda.cudart` (older)."""
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise BackendUnavailable("cuda-python is not installed (pip install cuda-python)")


def check_cuda(result):
    """cuda-python calls return (error, *values); raise on error, return the value(s) if any."""
    err, *values = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_identity(cudart) -> tuple[str, str]:
    props = check_cuda(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return name.strip("\x00 "), f"{props.major}.{props.minor}"


def engine_key(model_dir: Path, precision: str, cudart, trt) -> EngineKey:
    onnx_path = Path(model_dir) / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelSpecError(f"{onnx_path}: missing (TensorRT engines are built from it and keyed by its hash)")
    name, capability = gpu_identity(cudart)
    return EngineKey(file_sha256(onnx_path), name, capability, trt.__version__, precision)


class TensorRTBackend:
    def __init__(self, model_dir: Path, spec: ModelSpec, engine_cache_dir=None, log=None,
                 precision: str = "fp16", build_if_missing: bool = True, cuda_graph: bool = True) -> None:
        if importlib.util.find_spec("tensorrt") is None:
            raise BackendUnavailable(
                "TensorRT is not installed (on Jetson it comes with JetPack: python3-libnvinfer); "
                "use backend onnxruntime or torch")
        import tensorrt as trt

        cudart = import_cudart()
        log = log or (lambda msg: None)
        cache_dir = Path(engine_cache_dir or DEFAULT_CACHE).expanduser()
        key = engine_key(model_dir, precision, cudart, trt)
        path, problems = find_engine(key, cache_dir)
        if path is None:
            if not build_if_missing:
                raise BackendUnavailable("no usable TensorRT engine: " + "; ".join(problems))
            from ..tools.build_engine import build_engine

            log(f"building TensorRT {precision} engine ({'; '.join(problems)}) - this takes a while once")
            path, seconds = build_engine(model_dir, spec, cache_dir, precision=precision)
            log(f"TensorRT engine built in {seconds:.1f} s: {path}")
        self._trt, self._cudart = trt, cudart
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ModelSpecError(f"{path}: TensorRT could not deserialize the engine")
        self._check_io(spec, path)
        self._context = self._engine.create_execution_context()
        self._stream = check_cuda(cudart.cudaStreamCreate())
        self._spec = spec
        self._batch = 0
        self._graph_exec = None
        self._use_graph = cuda_graph
        self.name = f"tensorrt-{precision}"

    def _check_io(self, spec: ModelSpec, path: Path) -> None:
        trt = self._trt
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = sorted(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = sorted(n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        want = sorted(input_shapes(spec))
        if inputs != want or outputs != [OUTPUT_ACTIONS]:
            raise ModelSpecError(f"{path}: I/O tensors expected inputs {want} "
                                 f"and outputs {[OUTPUT_ACTIONS]}, got {inputs} and {outputs}")

    def _allocate(self, batch: int) -> None:
        """Pinned host + device buffers for `batch`, bound by tensor name; re-done when the batch changes."""
        cudart, spec = self._cudart, self._spec
        shapes = {**input_shapes(spec, batch), OUTPUT_ACTIONS: (batch, spec.chunk_size, spec.action_dim)}
        self._free()
        self._host, self._device = {}, {}
        for name, shape in shapes.items():
            nbytes = int(np.prod(shape)) * 4
            host_ptr = check_cuda(cudart.cudaMallocHost(nbytes))
            self._host[name] = np.ctypeslib.as_array(
                (np.ctypeslib.ctypes.c_float * int(np.prod(shape))).from_address(int(host_ptr))).reshape(shape)
            self._device[name] = (check_cuda(cudart.cudaMalloc(nbytes)), nbytes, host_ptr)
            if name != OUTPUT_ACTIONS:
                self._context.set_input_shape(name, shape)
            self._context.set_tensor_address(name, int(self._device[name][0]))
        self._batch = batch
        self._graph_exec = None

    def _enqueue(self) -> None:
        cudart = self._cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in input_shapes(self._spec):
            dev, nbytes, host = self._device[name]
            check_cuda(cudart.cudaMemcpyAsync(dev, host, nbytes, h2d, self._stream))
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        dev, nbytes, host = self._device[OUTPUT_ACTIONS]
        check_cuda(cudart.cudaMemcpyAsync(host, dev, nbytes, d2h, self._stream))

    def _capture_graph(self) -> None:
        """Record copy-in, engine and copy-out once; later calls replay the graph (less CPU launch time)."""
        cudart = self._cudart
        mode = cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal
        check_cuda(cudart.cudaStreamBeginCapture(self._stream, mode))
        self._enqueue()
        graph = check_cuda(cudart.cudaStreamEndCapture(self._stream))
        self._graph_exec = check_cuda(cudart.cudaGraphInstantiate(graph, 0))

    def run(self, vl_features: np.ndarray, sensor_window: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        feeds = graph_inputs(self._spec, vl_features, sensor_window, motion)
        batch = vl_features.shape[0]
        if batch != self._batch:
            self._allocate(batch)
            self._enqueue()  # first run also warms up before a graph is captured
            check_cuda(self._cudart.cudaStreamSynchronize(self._stream))
        for name, value in feeds.items():
            self._host[name][...] = value
        if self._use_graph and self._graph_exec is None:
            self._capture_graph()
        if self._graph_exec is not None:
            check_cuda(self._cudart.cudaGraphLaunch(self._graph_exec, self._stream))
        else:
            self._enqueue()
        check_cuda(self._cudart.cudaStreamSynchronize(self._stream))
        return self._host[OUTPUT_ACTIONS].copy()

    def _free(self) -> None:
        for dev, _, host in getattr(self, "_device", {}).values():
            self._cudart.cudaFree(dev)
            self._cudart.cudaFreeHost(host)
        self._device = {}

    def __del__(self) -> None:
        try:
            self._free()
        except Exception:
            pass
