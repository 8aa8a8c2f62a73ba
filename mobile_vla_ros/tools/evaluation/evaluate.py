"""mobile-vla-eval: offline evaluation of a model on recorded rosbag2 bags (sqlite3 or mcap).

Deterministic replay in bag time through the code the robot runs: the VLM extractor named by
model.yaml runs on the bag's images, scheduled as vlm_node schedules it (core/vlm_schedule.py: the
newest frame no older than `--max-image-age` and newer than the instruction, at `--vlm-hz`, one
forward at a time, a tick that finds it busy skipped and the next forward started when it ends), and
its features become usable only `--vlm-latency` seconds after the forward started; the ActionExpertCore (feature cache,
sensor window, safety gates, backend) ticks at `--action-hz` on the window ending at each tick.
Every chunk is compared with the recorded commands over its span (zero-order hold of `cmd_vel`).

Reports MAE per action dimension and overall (first step and whole chunk) beside zero-action and
mean-action baselines on the same ticks, the feature-age distribution, and the ticks without a
chunk by reason; writes JSON + Markdown + PNG plots. `--vlm-hz 0.59,1,3.33` sweeps.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...core.action_pipeline import ActionExpertCore
from ...core.model_spec import ModelSpec, ModelSpecError
from ...core.names import CMD_VEL_TOPIC, IMAGE_TOPIC, INSTRUCTION_TOPIC, SENSOR_TOPIC, bag_topic
from ...core.params import VLM_NODE_PARAMS, spec_by_name
from ...core.vlm_schedule import CameraFrame, VirtualTimeVlm, VlmScheduler
from ..cli import comma_list, progress_bar, run_reporting_errors
from ..recordings import EXECUTED_TOPIC, BagError, Recording, commands_over, find_bags, read_recording


@dataclass
class ReplayConfig:
    vlm_hz: float
    action_hz: float
    vlm_latency: float
    max_feature_age: float
    max_sensor_gap: float
    twist_mapping: tuple[str, ...] = ("linear.x", "angular.z")
    max_image_age: float = float(spec_by_name(VLM_NODE_PARAMS)["max_image_age"].default)


def replay(rec: Recording, spec: ModelSpec, backend, extractor, cfg: ReplayConfig, instruction: str | None,
           progress=None) -> dict:
    """One deterministic pass over the recording; returns per-tick predictions and targets."""
    core = ActionExpertCore(spec, backend, cfg.max_feature_age, cfg.max_sensor_gap, cfg.twist_mapping)
    events = [(t, 0, "instruction", text) for t, text in rec.instructions]
    if instruction is not None:
        events.append((rec.sensor[0][0] - 1.0, 0, "instruction", instruction))
    events += [(t, 1, "image", rgb) for t, rgb in rec.images]
    events += [(t, 2, "executed", values) for t, values in rec.executed]
    events += [(t, 2, "sensor", values) for t, values in rec.sensor]
    start, end = rec.sensor[0][0], min(rec.sensor[-1][0], rec.commands[-1][0])
    vlm_period, action_period = 1.0 / cfg.vlm_hz, 1.0 / cfg.action_hz
    events += [(start + k * vlm_period, 3, "vlm_tick", None) for k in range(int((end - start) / vlm_period) + 1)]
    events += [(start + k * action_period, 4, "action_tick", None)
               for k in range(1, int((end - start) / action_period) + 1)]
    events.sort(key=lambda e: (e[0], e[1]))
    command_times, command_values = rec.command_arrays()
    # The VLM side as vlm_node schedules it (frames, instruction epochs, skip-if-busy, catch-up).
    vlm = VirtualTimeVlm(VlmScheduler(cfg.max_image_age), extractor.extract, cfg.vlm_latency)
    ticks: list[dict] = []
    reasons: Counter = Counter()

    def deliver(until: float) -> None:
        while vlm.next_ready is not None and vlm.next_ready <= until:
            done = vlm.finish()
            if done.current:
                core.on_features(done.features, done.inputs.newest.stamp, done.ready)

    for i, (t, _, kind, payload) in enumerate(events):
        deliver(t)
        if kind == "instruction":
            vlm.schedule.set_instruction(payload, t)
            core.on_instruction(payload, t)
        elif kind == "image":
            vlm.add_frame("camera", CameraFrame(payload, t, "camera"), t)
        elif kind == "executed":
            core.on_executed(payload)
        elif kind == "sensor":
            core.on_sensor(t, payload, t)
        elif kind == "vlm_tick":
            vlm.tick(t)
        else:
            result = core.tick(t)
            if result.chunk is None:
                reasons[result.reason.value] += 1
                continue
            target, covered = commands_over(command_times, command_values, np.array([t]), spec.chunk_size,
                                            spec.action_dt)
            if not covered[0]:
                reasons["no recorded command for the whole chunk"] += 1
                continue
            ticks.append({"t": t, "pred": result.chunk.actions, "target": target[0],
                          "feature_age": result.feature_age, "stamp": result.chunk.stamp, "motion": result.motion})
        if progress is not None and i % 2000 == 0:
            progress(i / len(events))
    if progress is not None:
        progress(1.0)
    return {"ticks": ticks, "no_chunk": dict(reasons), "vlm": vlm.counts, "forward_seconds": vlm.forward_seconds,
            "action_ticks": sum(1 for e in events if e[2] == "action_tick")}


def metrics(ticks: list[dict], action_names: list[str]) -> dict:
    if not ticks:
        return {"chunks": 0}
    pred = np.stack([t["pred"] for t in ticks])  # [N, K, D]
    target = np.stack([t["target"] for t in ticks])
    mean_action = target.reshape(-1, target.shape[-1]).mean(axis=0)

    def mae(p):
        err = np.abs(p - target)
        return {"first_step": {n: float(err[:, 0, d].mean()) for d, n in enumerate(action_names)}
                | {"overall": float(err[:, 0].mean())},
                "chunk": {n: float(err[:, :, d].mean()) for d, n in enumerate(action_names)}
                | {"overall": float(err.mean())}}

    out = {"chunks": len(ticks), "mae": mae(pred), "mae_zero_action": mae(np.zeros_like(pred)),
           "mae_mean_action": mae(np.broadcast_to(mean_action, pred.shape))}
    ages = np.array([t["feature_age"] for t in ticks])
    ages = ages[np.isfinite(ages)]  # live: a chunk whose features the observer had not seen has no age
    if ages.size:
        edges = np.arange(0.0, max(ages.max(), 0.25) + 0.25, 0.25)
        counts, _ = np.histogram(ages, bins=edges)
        out["feature_age_s"] = {"p50": float(np.percentile(ages, 50)), "max": float(ages.max()),
                                "histogram": {f"{a:.2f}-{b:.2f}": int(c) for a, b, c in zip(edges, edges[1:], counts)}}
    return out


def markdown(results: list[dict], spec: ModelSpec) -> str:
    lines = ["| vlm_hz | VLM latency s | chunks | MAE first step | MAE chunk | zero-action MAE | mean-action MAE | "
             "feature age p50 / max s | ticks without chunk |", "|" + "---|" * 9]
    for r in results:
        m = r["metrics"]
        if not m.get("chunks"):
            lines.append(f"| {r['vlm_hz']} | {r['vlm_latency']:.3f} | 0 | - | - | - | - | - | {r['no_chunk']} |")
            continue
        lines.append(
            f"| {r['vlm_hz']} | {r['vlm_latency']:.3f} | {m['chunks']} | {m['mae']['first_step']['overall']:.4f} | "
            f"{m['mae']['chunk']['overall']:.4f} | {m['mae_zero_action']['chunk']['overall']:.4f} | "
            f"{m['mae_mean_action']['chunk']['overall']:.4f} | {_ages(m)} | {sum(r['no_chunk'].values())} |")
    per_dim = ["", "MAE per dimension (whole chunk): " + "; ".join(
        f"vlm_hz {r['vlm_hz']}: " + ", ".join(f"{n} {r['metrics']['mae']['chunk'][n]:.4f}" for n in spec.action_names)
        for r in results if r["metrics"].get("chunks"))]
    return "\n".join(lines + per_dim)


def _ages(m: dict) -> str:
    ages = m.get("feature_age_s")
    return f"{ages['p50']:.2f} / {ages['max']:.2f}" if ages else "-"


def plot(result: dict, spec: ModelSpec, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = result["ticks"]
    if not ticks:
        return
    t = np.array([x["t"] for x in ticks])
    t = t - t[0]
    pred = np.stack([x["pred"][0] for x in ticks])
    target = np.stack([x["target"][0] for x in ticks])
    err = np.abs(np.stack([x["pred"] for x in ticks]) - np.stack([x["target"] for x in ticks])).mean(axis=(1, 2))
    ages = np.array([x["feature_age"] for x in ticks])
    fig, axes = plt.subplots(spec.action_dim + 1, 1, figsize=(9, 2.4 * (spec.action_dim + 1)))
    for d, name in enumerate(spec.action_names):
        axes[d].plot(t, target[:, d], label="recorded", lw=1.2)
        axes[d].plot(t, pred[:, d], label="predicted (first step)", lw=1.0)
        axes[d].set_ylabel(name)
        axes[d].legend(loc="upper right", fontsize=8)
    axes[-1].scatter(ages, err, s=4)
    axes[-1].set_xlabel("feature age at use (s)")
    axes[-1].set_ylabel("chunk MAE")
    axes[0].set_title(f"{title + ': ' if title else ''}vlm_hz {result['vlm_hz']}, "
                      f"VLM latency {result['vlm_latency']:.3f} s")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bag", type=Path, action="append", required=True,
                    help="rosbag2 bag or directory of bags (repeatable)")
    ap.add_argument("--model-dir", type=Path, default=None, help="default: models/default")
    ap.add_argument("--vlm-model-path", default="", help="VLM directory; default: the model dir's vlm/")
    ap.add_argument("--clip-model-path", default="")
    ap.add_argument("--vlm-dtype", default="fp32", choices=("fp32", "int8w"),
                    help="VLM weights (on the CPU): fp32, or int8 weights (vlm_node's dtype int8w)")
    ap.add_argument("--vlm-hz", type=comma_list(float), default="3.33", help="comma-separated: a sweep")
    ap.add_argument("--action-hz", type=float, default=10.0)
    ap.add_argument("--vlm-latency", default="auto",
                    help="seconds from forward start to usable features; auto = median forward time measured here")
    ap.add_argument("--max-feature-age", type=float, default=2.0)
    ap.add_argument("--max-image-age", type=float, default=ReplayConfig.max_image_age,
                    help="vlm_node's max_image_age: older frames are not used")
    ap.add_argument("--max-sensor-gap", type=float, default=0.05)
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    ap.add_argument("--image-topic", default=bag_topic(IMAGE_TOPIC))
    ap.add_argument("--sensor-topic", default=bag_topic(SENSOR_TOPIC))
    ap.add_argument("--instruction-topic", default=bag_topic(INSTRUCTION_TOPIC))
    ap.add_argument("--action-topic", default=bag_topic(CMD_VEL_TOPIC),
                    help="recorded actions: Twist or TwistStamped (--twist-mapping), JointTrajectory (e.g. "
                         "/action_chunk) or JointState (joints named as the model's action_names)")
    ap.add_argument("--executed-topic", default=EXECUTED_TOPIC,
                    help="Twist commands the robot executed, for the motion since the image (default: what "
                         "mobile-vla-record-sim writes); bags without it use --action-topic")
    ap.add_argument("--twist-mapping", default="linear.x,angular.z", help="Twist field per action dimension")
    ap.add_argument("--instruction", default=None, help="used when the bag has no instruction topic")
    ap.add_argument("--live", action="store_true",
                    help="replay to the real nodes on sim time (/clock from this process) instead of in-process; "
                         "the latency comes from the real forward plus vlm_node's simulated_latency")
    ap.add_argument("--loops", type=int, default=1,
                    help="with --live: play each bag this many times back to back, /clock jumping back to its start "
                         "each time (as ros2 bag play --loop); every pass is scored on its own as well")
    ap.add_argument("--out", type=Path, default=Path("eval_results"))
    return ap


def main(argv: list[str] | None = None) -> int:
    return run_reporting_errors("mobile-vla-eval", _run, _parser().parse_args(argv),
                                (BagError, ModelSpecError, ValueError))


def _run(args) -> int:
    from ...core.backend_factory import create_backend
    from ...paths import default_model_dir

    model_dir = args.model_dir or default_model_dir()
    spec = ModelSpec.load(model_dir)
    mapping = [f for f in args.twist_mapping.split(",")]
    if len(mapping) != spec.action_dim:
        raise ValueError(f"--twist-mapping: expected {spec.action_dim} fields (one per {spec.action_names}), "
                         f"got {len(mapping)}")
    if args.loops < 1 or (args.loops > 1 and not args.live):
        raise ValueError(f"--loops: expected 1, or more with --live, got {args.loops}")
    extractor = _extractor(args, spec, model_dir)
    backend = create_backend(args.backend, Path(model_dir), spec, None)
    recordings = _recordings(args, spec, mapping)
    latency = _latency(args.vlm_latency, extractor, recordings[0][1])
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for hz in args.vlm_hz:
        cfg = ReplayConfig(hz, args.action_hz, latency, args.max_feature_age, args.max_sensor_gap, tuple(mapping),
                           args.max_image_age)
        result, by_bag = _evaluate_rate(args, recordings, spec, Path(model_dir), backend, extractor, cfg)
        for name, bag_ticks in by_bag.items():  # one figure per bag: their time axes are unrelated
            path = args.out / f"eval_vlm_hz_{hz}.png" if len(by_bag) == 1 else \
                args.out / "plots" / f"eval_vlm_hz_{hz}_{name}.png"
            plot({**result, "ticks": bag_ticks}, spec, path, title=name)
        results.append(result)
    _write_report(args, model_dir, spec, results)
    return 0


def _extractor(args, spec: ModelSpec, model_dir):
    """The VLM model.yaml names (weights from --vlm-model-path or the model's vlm/), checked against it."""
    from ...vlm.base import ExtractorConfig, VlmLoadError
    from ...vlm.factory import create_extractor

    try:
        extractor = create_extractor(ExtractorConfig(
            backend=spec.vlm_backend, pooling=spec.vlm_pooling, clip_model_path=args.clip_model_path,
            model_path=args.vlm_model_path or str(Path(model_dir) / "vlm"), dtype=args.vlm_dtype))
    except VlmLoadError as exc:
        raise ValueError(str(exc)) from exc
    if extractor.feature_dim != spec.feature_dim:
        raise ValueError(f"VLM feature dim {extractor.feature_dim} != model.yaml feature_dim {spec.feature_dim}")
    return extractor


def _recordings(args, spec: ModelSpec, mapping: list[str]) -> list[tuple[Path, Recording]]:
    """Every bag read (and checked for images and an instruction) before any replay starts."""
    topics = {"image": args.image_topic, "sensor": args.sensor_topic, "instruction": args.instruction_topic,
              "action": args.action_topic, "executed": args.executed_topic}
    recordings = [(bag, read_recording(bag, spec, topics, mapping)) for bag in find_bags(args.bag)]
    for bag, rec in recordings:
        if not rec.images:
            raise BagError(f"{bag}: no usable images on {args.image_topic}")
        if not rec.instructions and args.instruction is None:
            raise BagError(f"{bag}: no {args.instruction_topic} messages; pass --instruction")
    return recordings


def _evaluate_rate(args, recordings, spec: ModelSpec, model_dir: Path, backend, extractor,
                   cfg: ReplayConfig) -> tuple[dict, dict[str, list[dict]]]:
    """Every bag at one VLM rate (offline or live): the scored result and the ticks per bag."""
    hz = cfg.vlm_hz
    ticks, no_chunk, vlm, passes = [], Counter(), Counter(), [[] for _ in range(args.loops)]
    by_bag: dict[str, list[dict]] = {}
    for bag, rec in recordings:
        if args.live:
            out = _live(args, rec, spec, model_dir, hz, cfg.vlm_latency, extractor)
            for k, pass_ticks in enumerate(out["passes"]):
                passes[k] += pass_ticks
        else:
            out = replay(rec, spec, backend, extractor, cfg, args.instruction,
                         progress=lambda f, name=bag.name: progress_bar(f"vlm_hz {hz} {name}", f))
            print()
        ticks += out["ticks"]
        by_bag[bag.name] = out["ticks"]
        no_chunk.update(out["no_chunk"])
        vlm.update(out["vlm"])
    result = {"vlm_hz": hz, "vlm_latency": cfg.vlm_latency, "action_hz": args.action_hz, "metrics": metrics(
        ticks, spec.action_names), "no_chunk": dict(no_chunk), "vlm": dict(vlm), "ticks": ticks,
        "mode": "live" if args.live else "offline"}
    if args.loops > 1:
        result["passes"] = [metrics(p, spec.action_names) for p in passes]
        for k, m in enumerate(result["passes"]):
            mae = m["mae"]["chunk"]["overall"] if m.get("chunks") else float("nan")
            print(f"vlm_hz {hz} pass {k + 1}/{args.loops}: {m['chunks']} chunks, chunk MAE {mae:.4f}")
    return result, by_bag


def _write_report(args, model_dir, spec: ModelSpec, results: list[dict]) -> None:
    table = markdown(results, spec)
    print(table)
    (args.out / "eval.md").write_text(f"# mobile-vla-eval\n\nmodel: {model_dir}\nbags: "
                                      f"{', '.join(str(b) for b in args.bag)}\n\n{table}\n")
    summary = [{k: v for k, v in r.items() if k != "ticks"} for r in results]
    (args.out / "eval.json").write_text(json.dumps({"model_dir": str(model_dir), "bags": [str(b) for b in args.bag],
                                                    "results": summary}, indent=2))
    print(f"wrote {args.out}/eval.json, eval.md, eval_vlm_hz_*.png")


def _live(args, rec: Recording, spec: ModelSpec, model_dir: Path, hz: float, latency: float, extractor) -> dict:
    from .live_replay import live_replay

    forward = _latency("auto", extractor, rec)
    out = live_replay(rec, spec, model_dir, args.vlm_model_path or str(model_dir / "vlm"), hz, args.action_hz,
                      max(0.0, latency - forward), args.max_feature_age, args.max_sensor_gap, args.instruction,
                      log_dir=args.out, twist_mapping=tuple(args.twist_mapping.split(",")), loops=args.loops,
                      backend=args.backend)
    return {**out, "no_chunk": {}, "vlm": {}}


def _latency(value: str, extractor, rec: Recording) -> float:
    if value != "auto":
        seconds = float(value)
        if seconds < 0:
            raise ValueError(f"--vlm-latency: must be >= 0, got {seconds}")
        return seconds
    text = rec.instructions[0][1] if rec.instructions else "go"
    times = []
    for _, rgb in rec.images[:6]:
        began = time.perf_counter()
        extractor.extract([rgb], text)
        times.append(time.perf_counter() - began)
    return float(np.median(times[1:] if len(times) > 1 else times))


if __name__ == "__main__":
    raise SystemExit(main())
