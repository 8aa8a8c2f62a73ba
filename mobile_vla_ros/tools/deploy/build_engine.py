"""mobile-vla-build-engine: build the TensorRT engine of a model directory on this machine's GPU.

TensorRT 10 builder (core/tensorrt_backend.py, TensorRT samples / Polygraphy style): ONNX parser ->
builder config (precision flags, workspace limit, timing cache, one optimisation profile for
batch 1..max) -> serialized engine in the engine cache, with a JSON sidecar naming the TensorRT
version, GPU, compute capability, precision and ONNX sha256. FP16/INT8 builds keep numerically
fragile layers (normalisation, reductions, softmax, pow/div) in FP32. INT8 calibrates on sensor
windows (and VL features, when recorded) read from a rosbag2 bag.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ...core.backends import BackendUnavailable
from ...core.engine_cache import DEFAULT_CACHE
from ...core.model_spec import ONNX_FILE, ModelSpec, ModelSpecError
from ...core.names import SENSOR_TOPIC, bag_topic
from ...core.tensorrt_backend import build_engine
from .recorded_inputs import recorded_inputs


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-build-engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, required=True)
    precision = ap.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_true", help="FP16 engine (default)")
    precision.add_argument("--fp32", action="store_true")
    precision.add_argument("--int8", action="store_true", help="INT8 (+FP16) calibrated on --calib-bag")
    ap.add_argument("--calib-bag", type=Path, help="rosbag2 directory (sqlite3 or mcap) for INT8 calibration")
    ap.add_argument("--sensor-topic", default=bag_topic(SENSOR_TOPIC))
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
