"""mobile-vla-export: action-expert checkpoint -> model directory (action_expert.onnx + model.yaml +
action_expert.pt), with the ONNX graph checked by onnx.checker and verified against PyTorch.

`--random-init` makes a seeded, untrained model of a given shape (smoke tests, placeholders).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

from ...core.model_spec import (
    INPUT_FEATURES,
    INPUT_SENSOR,
    ONNX_FILE,
    OUTPUT_ACTIONS,
    TORCH_FILE,
    ModelSpec,
    ModelSpecError,
    Normalization,
)
from ...core.names import SENSOR_TOPIC, bag_topic
from ...core.sensor_window import SENSOR_CHANNELS

MAX_FP32_ERROR = 1e-4


def export_onnx(model, spec: ModelSpec, path: Path, opset: int = 17) -> None:
    import torch

    inputs = [torch.zeros(1, spec.feature_dim), torch.zeros(1, spec.sensor_window, spec.sensor_channels)]
    names = [INPUT_FEATURES, INPUT_SENSOR]
    if spec.motion_input:
        inputs.append(torch.zeros(1, spec.motion_dim))
        names.append(spec.motion_input)
    batch = {0: "batch"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model.eval(), tuple(inputs), str(path), input_names=names,
                          output_names=[OUTPUT_ACTIONS], opset_version=opset, dynamo=False,
                          dynamic_axes={**{n: batch for n in names}, OUTPUT_ACTIONS: batch})
    import onnx

    onnx.checker.check_model(onnx.load(str(path)), full_check=True)


def verify_onnx(model, model_dir: Path, spec: ModelSpec, samples: int = 100, seed: int = 0,
                recorded: dict[str, np.ndarray] | None = None) -> float:
    """Max |PyTorch - ONNX Runtime| over `samples` random inputs at the model's input scale, and over
    every recorded input when given."""
    import torch

    from ...core.backends import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend(model_dir, spec, use_cuda=False)
    rng = np.random.default_rng(seed)
    mean = np.asarray(spec.normalization.sensor_mean, dtype=np.float32)
    std = np.asarray(spec.normalization.sensor_std, dtype=np.float32)
    batches = []
    for _ in range(samples):
        batch = int(rng.integers(1, 5))
        f = rng.standard_normal((batch, spec.feature_dim)).astype(np.float32)
        w = (mean + std * rng.standard_normal((batch, spec.sensor_window, spec.sensor_channels))).astype(np.float32)
        m = rng.standard_normal((batch, spec.motion_dim)).astype(np.float32) if spec.motion_input else None
        batches.append((f, w, m))
    if recorded is not None:
        batches += [(recorded[INPUT_FEATURES][i : i + 1], recorded[INPUT_SENSOR][i : i + 1],
                     recorded[spec.motion_input][i : i + 1] if spec.motion_input else None)
                    for i in range(len(recorded[INPUT_SENSOR]))]
    worst = 0.0
    for f, w, m in batches:
        with torch.no_grad():
            ref = model(torch.from_numpy(f), torch.from_numpy(w), None if m is None else torch.from_numpy(m)).numpy()
        worst = max(worst, float(np.max(np.abs(backend.run(f, w, m) - ref))))
    return worst


def write_model_dir(model, spec: ModelSpec, out: Path, extra: dict | None = None,
                    recorded: dict[str, np.ndarray] | None = None) -> float:
    """Write checkpoint, ONNX and model.yaml into `out`; return the verified max abs error."""
    from ...models.action_expert import save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    spec.normalization = model.normalization()
    save_checkpoint(model, out / TORCH_FILE, {"spec": spec.to_yaml_dict(), **(extra or {})})
    export_onnx(model, spec, out / ONNX_FILE)
    spec.save(out)
    error = verify_onnx(model, out, spec, recorded=recorded)
    if error > MAX_FP32_ERROR:
        raise ModelSpecError(f"ONNX differs from PyTorch by {error:.2e} (> {MAX_FP32_ERROR:.0e} allowed in FP32)")
    return error


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="action_expert.pt written by mobile-vla-train / this tool")
    src.add_argument("--random-init", action="store_true", help="seeded untrained model of the shape below")
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verify-bag", type=Path, help="also verify on the inputs recorded in this rosbag2 bag")
    ap.add_argument("--sensor-topic", default=bag_topic(SENSOR_TOPIC), help="with --verify-bag")
    ap.add_argument("--features-topic", default="/vl_features", help="with --verify-bag")
    shape = ap.add_argument_group("shape (with --random-init)")
    shape.add_argument("--feature-dim", type=int, default=64)
    shape.add_argument("--sensor-type", choices=sorted(SENSOR_CHANNELS), default="imu")
    shape.add_argument("--sensor-window", type=int, default=65)
    shape.add_argument("--sensor-hz", type=float, default=650.0)
    shape.add_argument("--chunk-size", type=int, default=8)
    shape.add_argument("--action-names", default="linear_x,angular_z")
    shape.add_argument("--action-dt", type=float, default=0.0125)
    shape.add_argument("--hidden-dim", type=int, default=128)
    shape.add_argument("--head", choices=["conv_mlp", "recurrent"], default="conv_mlp",
                       help="recurrent = an LSTM 2048->4096 + MLP (the reference shape)")
    shape.add_argument("--vlm-backend", default="kosmos2")
    shape.add_argument("--vlm-pooling", default="last_token")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from ...models.action_expert import ActionExpertConfig, build_action_expert, load_checkpoint

    try:
        if args.checkpoint is not None:
            if not args.checkpoint.is_file():
                raise ModelSpecError(f"--checkpoint {args.checkpoint}: no such file")
            model, payload = load_checkpoint(args.checkpoint)
            if "spec" not in payload:
                raise ModelSpecError(f"{args.checkpoint}: no 'spec' entry (not written by mobile_vla_ros)")
            spec = ModelSpec.from_dict(payload["spec"], source=str(args.checkpoint))
        else:
            names = [n for n in args.action_names.split(",") if n]
            channels = len(SENSOR_CHANNELS[args.sensor_type])
            spec = ModelSpec(
                name=args.out.name, feature_dim=args.feature_dim, sensor_type=args.sensor_type,
                sensor_window=args.sensor_window, sensor_hz=args.sensor_hz, chunk_size=args.chunk_size,
                action_names=names, action_dt=args.action_dt,
                normalization=Normalization([0.0] * channels, [1.0] * channels, [0.0] * len(names),
                                            [1.0] * len(names)),
                vlm_backend=args.vlm_backend, vlm_pooling=args.vlm_pooling,
                architecture={"hidden_dim": args.hidden_dim, "head": args.head},
                notes=f"untrained: random initialisation with seed {args.seed}")
            torch.manual_seed(args.seed)
            model = build_action_expert(ActionExpertConfig.from_spec(spec)).eval()
        recorded = None
        if args.verify_bag is not None:
            from .recorded_inputs import recorded_inputs

            recorded = recorded_inputs(args.verify_bag, spec, args.sensor_topic, args.features_topic)
        error = write_model_dir(model, spec, args.out, recorded=recorded)
    except (ModelSpecError, OSError) as exc:
        print(f"mobile-vla-export: error: {exc}", file=sys.stderr)
        return 1
    inputs = "100 random inputs" + (f" + {len(recorded[INPUT_SENSOR])} recorded ones" if recorded else "")
    print(f"wrote {args.out}/{{{ONNX_FILE},{TORCH_FILE},model.yaml}}; "
          f"max |PyTorch - ONNX Runtime| over {inputs} = {error:.2e} (limit {MAX_FP32_ERROR:.0e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
