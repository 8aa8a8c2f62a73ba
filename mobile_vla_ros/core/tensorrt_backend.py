"""TensorRT runtime backend (TensorRT 10 Python API + cuda-python or pycuda, core/cuda_binding.py).

Import-safe: tensorrt and cuda are imported only when a backend is created, so machines without
them can import this package. It also builds the engine (on the first start, or ahead of time with
mobile-vla-build-engine). Run path (TensorRT samples' common_runtime style): deserialize ->
execution context -> tensors bound by name with set_tensor_address -> execute_async_v3 on one
stream, pinned host buffers, optional CUDA-graph capture of the whole enqueue.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .backends import BackendUnavailable, graph_inputs, tensorrt_installed
from .cuda_binding import CudaBinding, CudaIo, cuda_binding
from .engine_cache import DEFAULT_CACHE, PRECISIONS, EngineKey, find_engine, write_sidecar
from .model_spec import INPUT_SENSOR, ONNX_FILE, OUTPUT_ACTIONS, ModelSpec, ModelSpecError, file_sha256, input_shapes


def require_tensorrt() -> None:
    """BackendUnavailable naming what to install, unless the TensorRT runtime is there. (Callers then
    `import tensorrt` themselves, so type checkers see its API through tensorrt-stubs.)"""
    if not tensorrt_installed():
        raise BackendUnavailable(
            "TensorRT is not installed (on Jetson it comes with JetPack: python3-libnvinfer; a tensorrt that is "
            "only type stubs does not count); use backend onnxruntime or torch")


def engine_key(model_dir: Path, precision: str, cuda: CudaBinding, trt) -> EngineKey:
    onnx_path = Path(model_dir) / ONNX_FILE
    if not onnx_path.is_file():
        raise ModelSpecError(f"{onnx_path}: missing (TensorRT engines are built from it and keyed by its hash)")
    name, capability = cuda.gpu_identity()
    return EngineKey(file_sha256(onnx_path), name, capability, trt.__version__, precision)


class TensorRTBackend:
    def __init__(self, model_dir: Path, spec: ModelSpec, engine_cache_dir=None, log=None,
                 precision: str = "fp16", build_if_missing: bool = True, cuda_graph: bool = True) -> None:
        require_tensorrt()
        import tensorrt as trt

        log = log or (lambda msg: None)
        cuda = cuda_binding(log)
        cache_dir = Path(engine_cache_dir or DEFAULT_CACHE).expanduser()
        key = engine_key(model_dir, precision, cuda, trt)
        path, problems = find_engine(key, cache_dir)
        if path is None:
            if not build_if_missing:
                raise BackendUnavailable("no usable TensorRT engine: " + "; ".join(problems))
            log(f"building TensorRT {precision} engine ({'; '.join(problems)}) - this takes a while once")
            path, seconds = build_engine(model_dir, spec, cache_dir, precision=precision, cuda=cuda)
            log(f"TensorRT engine built in {seconds:.1f} s: {path}")
        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        engine = trt.Runtime(self._logger).deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelSpecError(f"{path}: TensorRT could not deserialize the engine")
        self._engine = engine
        self._check_io(spec, path)
        self._context = engine.create_execution_context()
        self._spec = spec
        self._io = CudaIo(cuda, lambda batch: io_shapes(spec, batch), list(input_shapes(spec)), OUTPUT_ACTIONS,
                          self._execute, self._bind, cuda_graph)
        self.name = f"tensorrt-{precision}"

    def _check_io(self, spec: ModelSpec, path: Path) -> None:
        trt, engine = self._trt, self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        outputs = sorted(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        want = sorted(input_shapes(spec))
        if inputs != want or outputs != [OUTPUT_ACTIONS]:
            raise ModelSpecError(f"{path}: I/O tensors expected inputs {want} "
                                 f"and outputs {[OUTPUT_ACTIONS]}, got {inputs} and {outputs}")

    def _bind(self, name: str, shape: tuple[int, ...], device_ptr: int) -> None:
        if name != OUTPUT_ACTIONS and not self._context.set_input_shape(name, shape):
            raise ModelSpecError(f"TensorRT engine rejects input {name} of shape {list(shape)}")
        self._context.set_tensor_address(name, device_ptr)

    def _execute(self, stream_handle: int) -> None:
        if not self._context.execute_async_v3(stream_handle):
            raise RuntimeError("TensorRT execute_async_v3 failed")

    def run(self, vl_features: np.ndarray, sensor_window: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        return self._io.run(graph_inputs(self._spec, vl_features, sensor_window, motion))

    def close(self) -> None:
        """Free the device and pinned buffers and the CUDA graph (the node's release step calls this)."""
        self._io.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def io_shapes(spec: ModelSpec, batch: int) -> dict[str, tuple[int, ...]]:
    """Every engine tensor (inputs, then the output) with its shape at `batch`."""
    return {**input_shapes(spec, batch), OUTPUT_ACTIONS: (batch, spec.chunk_size, spec.action_dim)}


# -- engine build (first start on the robot, or mobile-vla-build-engine ahead of time) ----------
WORKSPACE_BYTES = 512 << 20  # the action expert needs little; Orin NX shares 16 GB with the VLM


def _fragile(trt, layer) -> bool:
    kinds = {trt.LayerType.NORMALIZATION, trt.LayerType.REDUCE, trt.LayerType.SOFTMAX}
    if layer.type in kinds:
        return True
    if layer.type == trt.LayerType.ELEMENTWISE:
        layer.__class__ = trt.IElementWiseLayer
        return layer.op in (trt.ElementWiseOperation.POW, trt.ElementWiseOperation.DIV)
    if layer.type == trt.LayerType.UNARY:
        layer.__class__ = trt.IUnaryLayer
        return layer.op in (trt.UnaryOperation.EXP, trt.UnaryOperation.LOG, trt.UnaryOperation.SQRT)
    return False


def build_engine(model_dir: Path, spec: ModelSpec, cache_dir: Path = DEFAULT_CACHE, precision: str = "fp16",
                 max_batch: int = 8, calibration: dict[str, np.ndarray] | None = None,
                 cuda: CudaBinding | None = None) -> tuple[Path, float]:
    """Build and cache the engine; returns its path and the build time in seconds."""
    require_tensorrt()
    import tensorrt as trt
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("int8 needs calibration data (--calib-bag)")
    cuda = cuda or cuda_binding()
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = engine_key(model_dir, precision, cuda, trt)
    start = time.monotonic()

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    onnx_path = Path(model_dir) / ONNX_FILE
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelSpecError(f"{onnx_path}: TensorRT cannot parse it: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    timing_path = cache_dir / f"timing_sm{key.compute_capability.replace('.', '')}_trt{key.tensorrt_version}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    for name, (_, *rest) in input_shapes(spec).items():
        profile.set_shape(name, trt.Dims([1, *rest]), trt.Dims([1, *rest]), trt.Dims([max_batch, *rest]))
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if _fragile(trt, layer):
                layer.precision = trt.float32
                for j in range(layer.num_outputs):
                    layer.set_output_type(j, trt.float32)
    if precision == "int8" and calibration is not None:  # (checked above: int8 has calibration data)
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, cuda, calibration,
                                                  cache_dir / f"{key.stem}.calib")
        config.set_calibration_profile(profile)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelSpecError(f"{onnx_path}: TensorRT failed to build a {precision} engine (see the log above)")
    path = key.engine_path(cache_dir)
    path.write_bytes(bytes(serialized))
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    seconds = time.monotonic() - start
    write_sidecar(key, cache_dir, seconds, {"max_batch": max_batch, "workspace_bytes": WORKSPACE_BYTES})
    return path, seconds


def _make_calibrator(trt, cuda: CudaBinding, data: dict[str, np.ndarray], cache_file: Path):
    """Entropy calibrator over the recorded inputs, one sample per batch."""
    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.count = len(data[INPUT_SENSOR])
            self.device = {n: cuda.device_alloc(a[0].nbytes) for n, a in data.items()}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= self.count:
                return None
            for n in names:
                cuda.copy_to_device(self.device[n], np.ascontiguousarray(data[n][self.index : self.index + 1],
                                                                         dtype=np.float32))
            self.index += 1
            return [int(self.device[n]) for n in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return Calibrator()
