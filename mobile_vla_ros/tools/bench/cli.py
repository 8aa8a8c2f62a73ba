"""mobile-vla-bench: reproducible latency benchmarks; prints a table and writes JSON.

  mobile-vla-bench inference   action expert: backend x precision x batch, p50/p99 latency, for the
                               shipped model's architecture and inputs (`default`), the plain two-input
                               head (`conv_mlp`) and the recurrent LSTM head (reference row)
  mobile-vla-bench vlm         VLM extractors at full size (random weights) on the GPU, 1 and 5 views:
                               ours (CUDA graph) vs the plain transformers forward, same run;
                               end to end with GPU and with CPU preprocessing; int8 weights
  mobile-vla-bench loop        the real nodes closed over synthetic sources: async vs the synchronous
                               baseline, per VLM latency (period, end-to-end latency, feature age,
                               sensor loss, CPU and RSS per node), measured from outside the nodes
  mobile-vla-bench doctor      what this machine has for the nodes, and what the configured backends
                               still need, with the install line for each (exit 1 when something is)
  mobile-vla-bench soak        the async pipeline for --minutes: RSS over time, deadline misses,
                               safe stops, crashes (--cpu-burners N adds competing processes;
                               --faults injects clock jumps, a vlm_node kill, a sensor stall and
                               malformed messages, and times each stop and recovery)

Latency is numpy in -> numpy out, as the node calls a backend: GPU rows include the host<->device
copies. Weights are random (seeded); latency does not depend on their values.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ...core.backends import graph_inputs
from ...core.model_spec import ModelSpec, Normalization, input_shapes
from ..cli import comma_list, progress_bar
from .timing import measure

BENCH_HEADS = ("default", "conv_mlp", "recurrent")


def bench_spec(feature_dim: int, head: str) -> ModelSpec:
    """The benchmarked model at `feature_dim`: `default` is the shipped model's architecture, inputs and
    normalisation (models/default/model.yaml: the motion input and geometry head included); `conv_mlp`
    and `recurrent` are two-input heads of 128 hidden units."""
    if head not in BENCH_HEADS:
        raise ValueError(f"head: expected one of {', '.join(BENCH_HEADS)}, got {head!r}")
    if head == "default":
        from ...paths import default_model_dir

        shipped = ModelSpec.load(default_model_dir())
        return replace(shipped, name="bench_default", feature_dim=feature_dim)
    return ModelSpec(name=f"bench_{head}", feature_dim=feature_dim, sensor_type="imu", sensor_window=65,
                     sensor_hz=650.0, chunk_size=8, action_names=["linear_x", "angular_z"], action_dt=0.0125,
                     normalization=Normalization([0.0] * 6, [1.0] * 6, [0.0] * 2, [1.0] * 2),
                     architecture={"head": head, "hidden_dim": 128})


def bench_inputs(spec: ModelSpec, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(features, sensor window[, motion]) of one call: standard normal, the motion around the spec's
    statistics (the geometry head turns it back into metres and radians)."""
    f = rng.standard_normal((batch, spec.feature_dim)).astype(np.float32)
    w = rng.standard_normal((batch, spec.sensor_window, spec.sensor_channels)).astype(np.float32)
    if not spec.motion_input:
        return f, w
    norm = spec.normalization
    m = rng.standard_normal((batch, spec.motion_dim)) * norm.motion_std + norm.motion_mean
    return f, w, m.astype(np.float32)


class TorchCudaRunner:
    """PyTorch on the GPU with pinned host staging buffers; with `cuda_graph` the copy-in, the cast,
    the forward and the copy-out are captured once as one CUDA graph, so a call is a host memcpy into
    pinned memory, one graph launch and one synchronisation."""

    def __init__(self, model, batch: int, spec: ModelSpec, dtype, cuda_graph: bool) -> None:
        import torch

        self.torch = torch
        self.model = model.to("cuda", dtype).eval()
        self.dtype = dtype
        self.inputs = list(input_shapes(spec, batch))
        shapes = {**input_shapes(spec, batch), "out": (batch, spec.chunk_size, spec.action_dim)}
        self.spec = spec
        self.host = {k: torch.zeros(v, dtype=torch.float32, pin_memory=True) for k, v in shapes.items()}
        self.host_np = {k: v.numpy() for k, v in self.host.items()}
        self.device = {k: torch.zeros(v, dtype=torch.float32, device="cuda") for k, v in shapes.items()}
        self.stream = torch.cuda.Stream()
        self.graph = None
        if cuda_graph:
            with torch.cuda.stream(self.stream):
                for _ in range(3):  # warm-up (cuDNN/cuBLAS handles, autotuning) outside the capture
                    self._enqueue()
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                self._enqueue()

    def _enqueue(self) -> None:
        torch, d, h = self.torch, self.device, self.host
        with torch.inference_mode():
            for name in self.inputs:
                d[name].copy_(h[name], non_blocking=True)
            d["out"].copy_(self.model(*(d[name].to(self.dtype) for name in self.inputs)))
            h["out"].copy_(d["out"], non_blocking=True)

    def run(self, f: np.ndarray, w: np.ndarray, motion: np.ndarray | None = None) -> np.ndarray:
        for name, value in graph_inputs(self.spec, f, w, motion).items():
            self.host_np[name][...] = value
        with self.torch.cuda.stream(self.stream):  # replay() launches on the current stream
            if self.graph is not None:
                self.graph.replay()
            else:
                self._enqueue()
        self.stream.synchronize()
        return self.host_np["out"].copy()


def make_runners(model, spec: ModelSpec, model_dir: Path) -> list[tuple[str, str, Callable[[int], Callable]]]:
    """(backend, precision, batch -> run function) for every backend usable on this machine."""
    import torch

    from ...core.backends import OnnxRuntimeBackend, TorchBackend, tensorrt_usable

    runners: list[tuple[str, str, Callable[[int], Callable]]] = [
        ("onnxruntime-cpu", "fp32", lambda b: OnnxRuntimeBackend(model_dir, spec, use_cuda=False).run),
        ("torch-cpu", "fp32", lambda b: TorchBackend(model_dir, spec, device="cpu").run),
    ]
    if torch.cuda.is_available():
        runners += [
            ("torch-cuda", "fp32", lambda b: TorchCudaRunner(model, b, spec, torch.float32, False).run),
            ("torch-cuda", "fp16", lambda b: TorchCudaRunner(model, b, spec, torch.float16, False).run),
            ("torch-cuda+graph", "fp16", lambda b: TorchCudaRunner(model, b, spec, torch.float16, True).run),
        ]
    if tensorrt_usable():
        from ...core.tensorrt_backend import TensorRTBackend

        runners.append(("tensorrt", "fp16", lambda b: TensorRTBackend(model_dir, spec, model_dir).run))
    return runners


def inference_rows(heads: list[str], batches: list[int], feature_dim: int, iters: int,
                   max_seconds: float, log=print) -> list[dict]:
    import torch

    from ...models.action_expert import ActionExpertConfig, build_action_expert
    from ..deploy.export import write_model_dir

    rows = []
    rng = np.random.default_rng(0)
    for head in heads:
        spec = bench_spec(feature_dim, head)
        config = ActionExpertConfig.from_spec(spec)
        torch.manual_seed(0)
        model = build_action_expert(config).eval()
        model.set_normalization(spec.normalization)
        action_std = np.asarray(spec.normalization.action_std)
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp)
            error = write_model_dir(model, spec, model_dir)
            log(f"{head}: exported, max |PyTorch - ONNX Runtime| = {error:.1e}")
            runners = make_runners(model, spec, model_dir)
            for batch in batches:
                inputs = bench_inputs(spec, batch, rng)
                reference = None
                for backend, precision, make in runners:
                    run = make(batch)
                    out = run(*inputs)
                    if reference is None:
                        reference = out
                    timing = measure(lambda run=run, inputs=inputs: run(*inputs), iters, warmup=20,
                                     max_seconds=max_seconds)
                    row = {"head": head, "backend": backend, "precision": precision, "batch": batch,
                           "inputs": len(inputs), "hidden_dim": config.hidden_dim,
                           "geometry_head": config.geometry_head, **timing,
                           # in normalised action units, the scale of the 1e-2 FP16 budget
                           "max_abs_diff_vs_first_row": float(np.max(np.abs(out - reference) / action_std))}
                    rows.append(row)
                    log(f"  {head:<9} {backend:<17} {precision:<5} b={batch:<2} p50 {timing['p50_ms']:8.3f} ms  "
                        f"p99 {timing['p99_ms']:8.3f} ms  |diff| {row['max_abs_diff_vs_first_row']:.1e}")
    return rows


def environment() -> dict:
    import onnxruntime
    import torch

    from ...core.backends import tensorrt_installed

    env = {"python": platform.python_version(), "machine": platform.machine(), "processor": _cpu_name(),
           "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "cpu_threads": torch.get_num_threads(), "tensorrt": "not installed"}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    if tensorrt_installed():
        env["tensorrt"] = importlib.import_module("tensorrt").__version__
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def format_table(rows: list[dict]) -> str:
    header = "| head | inputs | backend | precision | batch | p50 ms | p99 ms | max abs diff vs ORT-CPU |"
    lines = [header, "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['head']} | {r['inputs']} | {r['backend']} | {r['precision']} | {r['batch']} | "
                     f"{r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_abs_diff_vs_first_row']:.1e} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    inf = sub.add_parser("inference", help="action-expert latency per backend/precision/batch")
    inf.add_argument("--heads", type=comma_list(), default="default,recurrent",
                     help=f"{', '.join(BENCH_HEADS)}: default = the shipped model's architecture and inputs")
    inf.add_argument("--batches", type=comma_list(int), default="1,8")
    inf.add_argument("--feature-dim", type=int, default=2048, help="2048 = Kosmos-2 hidden size")
    inf.add_argument("--iters", type=int, default=2000)
    inf.add_argument("--max-seconds", type=float, default=10.0, help="time budget per row")
    inf.add_argument("--out", type=Path, default=Path("bench_results/inference.json"))
    vlm = sub.add_parser("vlm", help="VLM extractor latency at full size on the GPU (needs CUDA)")
    vlm.add_argument("--backends", type=comma_list(), default="kosmos2,kosmos2_clip,qwen2_5_vl")
    vlm.add_argument("--views", type=comma_list(int), default="1,5")
    vlm.add_argument("--iters", type=int, default=100)
    vlm.add_argument("--max-seconds", type=float, default=8.0, help="time budget per row")
    vlm.add_argument("--no-int8", action="store_true", help="skip the int8-weight (dtype int8w) rows")
    vlm.add_argument("--compile", default="", metavar="MODE",
                     help="also the --compile-dtypes with the forward through torch.compile (default, "
                          "max-autotune-no-cudagraphs, ...) before the CUDA-graph capture")
    vlm.add_argument("--compile-dtypes", type=comma_list(), default="fp16", metavar="DTYPES",
                     help="the dtypes --compile applies to (fp16,int8w: int8w's compilation takes about 2 min per "
                          "shape)")
    vlm.add_argument("--profile", type=Path, default=None, metavar="DIR",
                     help="also write each setup's forward kernels (torch.profiler table) to DIR")
    vlm.add_argument("--out", type=Path, default=Path("bench_results/vlm.json"))
    loop = sub.add_parser("loop", help="async vs synchronous control loop, real nodes over DDS")
    modes = loop.add_mutually_exclusive_group()
    modes.add_argument("--sync", action="store_true", help="only the synchronous baseline")
    modes.add_argument("--async-only", action="store_true", help="only the asynchronous nodes")
    loop.add_argument("--vlm-latency", type=comma_list(float), default="0.3,1.5",
                      help="seconds per VLM forward, comma-separated")
    loop.add_argument("--sensor-hz", type=float, default=650.0)
    loop.add_argument("--headroom-sensor-hz", type=float, default=2000.0,
                      help="one more async run at this sensor rate (0: skip)")
    loop.add_argument("--action-hz", type=float, default=10.0)
    loop.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    loop.add_argument("--out", type=Path, default=Path("bench_results/loop.json"))
    closed = sub.add_parser("closed-loop", help="simulated robot closed loop: sync vs async with/without the "
                                                "motion input, over VLM latencies, standard and hard task sets")
    closed.add_argument("--model-dir", type=Path, default=None, help="model with the motion input "
                        "(default: models/default); also used for sync")
    closed.add_argument("--no-motion-model-dir", type=Path, default=None,
                        help="two-input model for async-no-motion (default: models/no_motion)")
    closed.add_argument("--episodes", type=int, default=20)
    closed.add_argument("--seed", type=int, default=1000, help="first held-out seed")
    closed.add_argument("--task-sets", type=comma_list(), default="standard,hard")
    closed.add_argument("--modes", type=comma_list(), default="sync,async-no-motion,async-motion,expert",
                        help="sync | sync-at-vlm-hz (sync with the row's VLM rate: the split's VLM compute) | "
                             "async-no-motion | async-motion | expert (the trained-on rule with ground-truth "
                             "perception: an upper bound)")
    closed.add_argument("--settings", type=comma_list(), default="cpu@3.33,0.3@3.33,0.3@1.0,1.5@0.59",
                        help="LATENCY@VLM_HZ, comma-separated; LATENCY 'cpu' = the stand-in VLM's measured forward")
    closed.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    closed.add_argument("--out", type=Path, default=Path("bench_results/closed_loop.json"))
    closed.add_argument("--report", type=Path, nargs="+", default=None, metavar="JSON",
                        help="run nothing: report earlier runs' JSON again, several as one (tables, the comparison "
                             "with sync episode by episode, PNG) into --out")
    doctor = sub.add_parser("doctor", help="what this machine has for the nodes and what the configured backends "
                                           "still need, with install lines")
    doctor.add_argument("--params-file", type=Path, action="append", default=None,
                        help="the nodes' parameter files (default: config/robot.yaml)")
    doctor.add_argument("--out", type=Path, default=None, help="also write the report as JSON")
    soak = sub.add_parser("soak", help="long run of the async pipeline: RSS, deadline misses, stops, crashes")
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--cpu-burners", type=int, default=0, help="processes spinning on the CPU meanwhile")
    soak.add_argument("--sensor-hz", type=float, default=650.0)
    soak.add_argument("--faults", action="store_true",
                      help="on sim time, inject a fault every --fault-interval s after the warm-up, in turn: /clock "
                           "10 s back, 10 s forward, SIGKILL + restart of vlm_node, 2 s sensor stall, malformed burst "
                           "(each at least once: the run outlasts --minutes if it must); report per fault the time to "
                           "the zero command and to recovery")
    soak.add_argument("--fault-interval", type=float, default=60.0)
    soak.add_argument("--warmup", type=float, default=None, metavar="S",
                      help="seconds before RSS growth is measured and the first fault (default: 20 %% of the run, "
                           "at least 30 s: allocator pools, DDS buffers and ORT arenas fill up first)")
    soak.add_argument("--out", type=Path, default=Path("bench_results/soak.json"))
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.what in ("loop", "soak"):
        return system_bench(args)
    if args.what == "doctor":
        from ...paths import share_dir
        from .doctor import main as doctor

        return doctor(args.params_file or [share_dir() / "config" / "robot.yaml"], args.out)
    if args.what == "vlm":
        return vlm_bench(args)
    if args.what == "closed-loop":
        return closed_loop_bench(args)
    env = environment()
    print(f"environment: {env}")
    rows = inference_rows(args.heads, args.batches, args.feature_dim, args.iters, args.max_seconds)
    print(format_table(rows))
    _write(args.out, {"benchmark": "inference", "environment": env, "rows": rows})
    return 0


def vlm_bench(args) -> int:
    import torch

    from .vlm import vlm_rows, vlm_table

    if not torch.cuda.is_available():
        print("mobile-vla-bench: error: vlm needs a CUDA GPU (full-size VLMs on a CPU take seconds per forward)",
              file=sys.stderr)
        return 2
    env = environment()
    print(f"environment: {env}")
    rows = vlm_rows(args.backends, args.views, args.iters, args.max_seconds, int8=not args.no_int8,
                    compile_mode=args.compile, compile_dtypes=tuple(args.compile_dtypes), profile_dir=args.profile,
                    on_backend_done=lambda done: _write(args.out, {"benchmark": "vlm", "environment": env,
                                                                   "complete": False, "rows": done}))
    print(vlm_table(rows))
    _write(args.out, {"benchmark": "vlm", "environment": env, "complete": True, "rows": rows})
    return 0


def closed_loop_bench(args) -> int:
    import os

    from . import closed_loop as C

    if args.report is not None:
        try:
            run = C.merged_runs([_closed_loop_run(path) for path in args.report])
        except (OSError, ValueError) as exc:
            print(f"mobile-vla-bench: error: --report: {exc}", file=sys.stderr)
            return 2
        return _closed_loop_report(run, args.out)
    from ...paths import default_model_dir
    from ...sim import cannot_simulate

    reason = cannot_simulate(args.episodes)
    bad_modes = [m for m in args.modes if m not in C.MODES]
    if reason or bad_modes:
        print(f"mobile-vla-bench: error: {reason or f'--modes: unknown {bad_modes}, expected {C.MODES}'}",
              file=sys.stderr)
        return 2
    try:
        settings = [(lat if lat == C.CPU_STAND_IN else float(lat), float(hz))
                    for lat, hz in (item.split("@") for item in args.settings)]
    except ValueError:
        print(f"mobile-vla-bench: error: --settings: expected LATENCY@VLM_HZ items, got {args.settings}",
              file=sys.stderr)
        return 2
    models = {"motion": str(args.model_dir or default_model_dir()),
              "no_motion": str(args.no_motion_model_dir or default_model_dir().parent / "no_motion")}
    env = environment()
    print(f"environment: {env}")
    seeds = list(range(args.seed, args.seed + args.episodes))
    workers = args.workers or os.cpu_count() or 1
    began = time.monotonic()

    def progress(episodes_done, episodes_total, rows_done, rows_total):
        last = rows_done[-1] if rows_done else None
        finished = (f"; {last['task_set']} {last['mode']} {last['latency']}@{last['vlm_hz']}: "
                    f"{last['successes']}/{last['episodes_run']}") if last else ""
        progress_bar(f"closed loop {episodes_done}/{episodes_total} episodes, {len(rows_done)}/{rows_total} runs"
                     f"{finished}", episodes_done / episodes_total)

    rows = C.run_matrix(models, seeds, args.task_sets, args.modes, settings, workers, progress)
    print()
    return _closed_loop_report({"benchmark": "closed-loop", "environment": env, "seeds": seeds, "models": models,
                                "wall_seconds": time.monotonic() - began, "rows": rows}, args.out)


def _closed_loop_run(path: Path) -> dict:
    run = json.loads(path.read_text())
    if not isinstance(run, dict) or run.get("benchmark") != "closed-loop" or "rows" not in run:
        raise ValueError(f"{path}: expected the JSON of a mobile-vla-bench closed-loop run, got "
                         f"{run.get('benchmark') if isinstance(run, dict) else type(run).__name__!r}")
    return run


def _closed_loop_report(run: dict, out: Path) -> int:
    """Print and write (JSON, Markdown, PNG at `out`) a closed-loop run: its table and each mode beside
    sync on the same seeds."""
    from . import closed_loop as C

    rows = run["rows"]
    paired = C.paired_with(rows)
    seeds = sorted({e["seed"] for r in rows for e in r["episodes"]})
    about = run.get("note") or f"seeds {seeds[0]}-{seeds[-1]}, {run.get('environment', {}).get('processor', '')}"
    tables = C.table(rows)
    if paired:  # only where the run has a sync row
        tables += f"\n\nEach mode beside sync on the same seeds:\n\n{C.paired_table(paired)}"
    print(tables)
    out.parent.mkdir(parents=True, exist_ok=True)
    C.plot(rows, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(f"# mobile-vla-bench closed-loop\n\n{about}\n\n{tables}\n")
    _write(out, {**run, "paired_with_sync": paired}, compact=True)
    return 0


def system_bench(args) -> int:
    import os

    from . import loop as B

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # every node runs on this machine
    env = environment()
    print(f"environment: {env}")
    if args.what == "soak":
        from .soak import run_soak, soak_table

        result = run_soak(args.minutes, args.cpu_burners, args.sensor_hz, faults=args.faults,
                          fault_interval=args.fault_interval, warmup=args.warmup)
        print(soak_table(result))
        _write(args.out, {"benchmark": "soak", "environment": env, "result": result})
        return 0
    latencies = args.vlm_latency
    modes = [B.SYNC] if args.sync else [B.ASYNC] if args.async_only else [B.ASYNC, B.SYNC]
    configs = [B.LoopConfig(mode, latency, args.sensor_hz, args.action_hz, args.seconds)
               for latency in latencies for mode in modes]
    if args.headroom_sensor_hz > 0 and B.ASYNC in modes:
        configs.append(B.LoopConfig(B.ASYNC, latencies[0], args.headroom_sensor_hz, args.action_hz, args.seconds))
    rows = []
    for i, cfg in enumerate(configs, 1):
        label = f"[{i}/{len(configs)}] {cfg.mode} VLM {cfg.vlm_latency} s, sensor {cfg.sensor_hz:.0f} Hz"
        rows.append(B.run_loop(cfg, progress=lambda f, label=label: progress_bar(label, f)))
        print()
    print(B.loop_table(rows))
    _write(args.out, {"benchmark": "loop", "environment": env, "rows": rows})
    return 0


def _write(path: Path, payload: dict, compact: bool = False) -> None:
    """`compact`: no indentation, for reports that carry every episode's path (indented, 160 seeds x 4
    settings were 8 MB, four fifths of it whitespace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, separators=(",", ":")) if compact else json.dumps(payload, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
