"""mobile-vla-build-engine: build the TensorRT engine of a model directory on this machine's GPU.

TensorRT 10 builder (TensorRT samples / Polygraphy style, separate from the runtime): ONNX parser ->
builder config (precision flags, workspace limit, timing cache, one optimisation profile for
batch 1..max) -> serialized engine in the engine cache, with a JSON sidecar naming the TensorRT
version, GPU, compute capability, precision and ONNX sha256. FP16/INT8 builds keep numerically
fragile layers (normalisation, reductions, softmax, pow/div) in FP32. INT8 calibrates on sensor
windows (and VL features, when recorded) read from a rosbag2 bag.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from ..core.backends import BackendUnavailable
from ..core.engine_cache import DEFAULT_CACHE, PRECISIONS, write_sidecar
from ..core.model_spec import INPUT_SENSOR, ONNX_FILE, ModelSpec, ModelSpecError, input_shapes
from .recorded_inputs import recorded_inputs

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
                 max_batch: int = 8, calibration: dict[str, np.ndarray] | None = None) -> tuple[Path, float]:
    """Build and cache the engine; returns its path and the build time in seconds."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("TensorRT is not installed (JetPack: python3-libnvinfer)") from exc
    from ..core.tensorrt_backend import engine_key, import_cudart

    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise ValueError("int8 needs calibration data (--calib-bag)")
    cudart = import_cudart()
    cache_dir = Path(cache_dir).expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = engine_key(model_dir, precision, cudart, trt)
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
        profile.set_shape(name, (1, *rest), (1, *rest), (max_batch, *rest))
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
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _make_calibrator(trt, import_cudart(), calibration,
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


def _make_calibrator(trt, cudart, data: dict[str, np.ndarray], cache_file: Path):
    """Entropy calibrator over the recorded inputs, one sample per batch."""
    from ..core.tensorrt_backend import check_cuda

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.count = len(data[INPUT_SENSOR])
            self.device = {n: check_cuda(cudart.cudaMalloc(a[0].nbytes)) for n, a in data.items()}

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            if self.index >= self.count:
                return None
            h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            for n in names:
                sample = np.ascontiguousarray(data[n][self.index : self.index + 1], dtype=np.float32)
                check_cuda(cudart.cudaMemcpy(self.device[n], sample.ctypes.data, sample.nbytes, h2d))
            self.index += 1
            return [int(self.device[n]) for n in names]

        def read_calibration_cache(self):
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache) -> None:
            cache_file.write_bytes(bytes(cache))

    return Calibrator()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-build-engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    precision = ap.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 engine (default)")
    precision.add_argument("--fp32", action="store_true")
    precision.add_argument("--int8", action="store_true", help="INT8 (+FP16) calibrated on --calib-bag")
    ap.add_argument("--calib-bag", type=Path, help="rosbag2 directory (sqlite3 or mcap) for INT8 calibration")
    ap.add_argument("--sensor-topic", default="/sensor")
    ap.add_argument("--features-topic", default="/vl_features")
    ap.add_argument("--engine-cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--max-batch", type=int, default=8)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    precision = "int8" if args.int8 else "fp32" if args.fp32 else "fp16"
    try:
        spec = ModelSpec.load(args.model_dir)
        if not (args.model_dir / ONNX_FILE).is_file():
            raise ModelSpecError(f"{args.model_dir / ONNX_FILE}: missing")
        calibration = None
        if precision == "int8":
            if args.calib_bag is None:
                raise ValueError("--int8 needs --calib-bag")
            calibration = recorded_inputs(args.calib_bag, spec, args.sensor_topic, args.features_topic)
        path, seconds = build_engine(args.model_dir, spec, args.engine_cache_dir, precision, args.max_batch,
                                     calibration)
    except (BackendUnavailable, ModelSpecError, ValueError, OSError) as exc:
        print(f"mobile-vla-build-engine: error: {exc}", file=sys.stderr)
        return 1
    print(f"built {path} ({precision}) in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
