"""What the policy does when it sees a given object: perception vs control, one question at a time.

A closed-loop failure mixes the VLM's features and the action expert's use of them. The probe holds
the robot at a task's start, turns it so that the target (or its same-colour twin, or nothing) lies
at a chosen bearing, renders that one image, and runs the shipped pipeline (VLM features, action
model through ONNX Runtime) with the robot at rest and a chosen feature age and yaw since the image.
The mean forward speed and yaw rate of the chunk answer: does it drive to what it sees, does it
turn back after turning past it, does it take the twin for the target? The sensor window is that of
a base at rest, once noise-free and `noise_draws` times with the sim IMU's white noise: the spread of
the yaw rate over those draws is how much of a command the sensor noise alone decides.

  python -m mobile_vla_ros.tools.simulation.policy_probe --task-set hard --seeds 1000-1019 [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ...core.model_spec import ModelSpec
from ...sim import parse_seeds
from ...sim.episode import image_informed_command
from ...sim.expert_labels import perceived_target
from ...sim.world import TASK_SETS, SimConfig, SimRobot, sample_task

GRAVITY = 9.81
# (feature age s, yaw since the image rad): fresh, old, and old after turning 0.6 rad left past the image
MOTIONS = ((0.3, 0.0), (2.0, 0.0), (2.0, 0.6))
BEARINGS = (-0.4, 0.0, 0.4)


@dataclass(frozen=True)
class ProbeRow:
    seed: int
    instruction: str
    looking_at: str        # target | twin | away (the target behind the robot)
    distance_m: float      # base centre to the object's centre
    bearing_rad: float     # of the object in the image (positive: to the left)
    feature_age_s: float
    yaw_since_image_rad: float
    forward_mps: float     # mean over the chunk
    yaw_rate_radps: float
    label_forward_mps: float   # what the model is trained to imitate (sim/episode.py image_informed_command)
    label_yaw_rate_radps: float
    noisy_yaw_rate_radps: float | None = None  # mean over the noisy windows
    yaw_rate_noise_std: float | None = None    # spread over the noisy windows


def rest_window(spec: ModelSpec) -> np.ndarray:
    """A sensor window of a robot standing still: zero rates, gravity on z (IMU layout gyro, accel)."""
    window = np.zeros((1, spec.sensor_window, spec.sensor_channels), dtype=np.float32)
    if spec.sensor_type == "imu":
        window[..., 5] = GRAVITY
    return window


def noisy_rest_windows(spec: ModelSpec, cfg: SimConfig, draws: int, seed: int = 0) -> np.ndarray:
    """`draws` rest windows [draws, 1, W, C] with the sim IMU's white noise (SimConfig.imu_noise), as a
    robot standing still reads them."""
    if spec.sensor_type != "imu":
        raise ValueError(f"noisy rest windows model the sim's IMU; this model's sensor is {spec.sensor_type}")
    noise = cfg.imu_noise.astype(np.float32)
    draw = np.random.default_rng(seed).standard_normal((draws, 1, spec.sensor_window, spec.sensor_channels))
    return rest_window(spec)[None] + draw.astype(np.float32) * noise


def probe(model_dir: Path, task_set: str, seeds: list[int], bearings=BEARINGS, motions=MOTIONS,
          noise_draws: int = 0) -> list[ProbeRow]:
    from ...core.backend_factory import create_backend
    from ...vlm.base import ExtractorConfig
    from ...vlm.factory import create_extractor

    spec = ModelSpec.load(model_dir)
    if spec.motion_input is None:
        raise ValueError(f"{model_dir}: the probe sets the motion since the image; this model has no motion input")
    backend = create_backend("onnxruntime", model_dir, spec)
    extractor = create_extractor(ExtractorConfig(backend=spec.vlm_backend, pooling=spec.vlm_pooling,
                                                 model_path=str(model_dir / "vlm"), device="cpu", dtype="fp32"))
    window = rest_window(spec)
    cfg = SimConfig.for_evaluation(task_set)
    noisy = noisy_rest_windows(spec, cfg, noise_draws) if noise_draws else []
    forward, turn = (spec.action_names.index(n) for n in ("linear_x", "angular_z"))
    rows = []
    for seed in seeds:
        task = sample_task(seed, cfg)
        x, y, _ = task.start
        views = [("target", task.target_object, b) for b in bearings]
        views += [("twin", twin, b) for twin in task.twins[:1] for b in bearings]
        views.append(("away", task.target_object, math.pi))
        with SimRobot(task, cfg) as robot:
            for looking_at, obj, bearing in views:
                robot.place(x, y, math.atan2(obj.y - y, obj.x - x) - bearing)
                features = extractor.extract([robot.render()], task.instruction).astype(np.float32)
                target_bearing, surface = robot.target_bearing(), robot.target_distance()
                shows_target = bool(perceived_target(robot)[0])  # the labels' "in view"
                for age, dyaw in motions:
                    motion = np.array([[age, 0.0, 0.0, dyaw]], dtype=np.float32)
                    chunk = backend.run(features, window, motion)[0]
                    label = image_informed_command(target_bearing - dyaw, surface, shows_target, dyaw)
                    turns = [float(backend.run(features, w, motion)[0][:, turn].mean()) for w in noisy]
                    rows.append(ProbeRow(seed, task.instruction, looking_at, math.hypot(obj.x - x, obj.y - y),
                                         bearing, age, dyaw, float(chunk[:, forward].mean()),
                                         float(chunk[:, turn].mean()), float(label[0]), float(label[1]),
                                         float(np.mean(turns)) if turns else None,
                                         float(np.std(turns)) if turns else None))
    return rows


def table(rows: list[ProbeRow]) -> str:
    def noisy(r: ProbeRow) -> str:
        return "–" if r.noisy_yaw_rate_radps is None else f"{r.noisy_yaw_rate_radps:+.2f} ± {r.yaw_rate_noise_std:.2f}"

    lines = ["| seed | looking at | distance m | bearing rad | age s | yaw since image rad | forward m/s (label) "
             "| yaw rate rad/s (label) | with sensor noise |", "|" + "---|" * 9]
    lines += [f"| {r.seed} | {r.looking_at} | {r.distance_m:.1f} | {r.bearing_rad:+.1f} | {r.feature_age_s:.1f} | "
              f"{r.yaw_since_image_rad:+.1f} | {r.forward_mps:.2f} ({r.label_forward_mps:.2f}) | "
              f"{r.yaw_rate_radps:+.2f} ({r.label_yaw_rate_radps:+.2f}) | {noisy(r)} |" for r in rows]
    return "\n".join(lines)


def summary(rows: list[ProbeRow]) -> dict:
    """Per kind of view: mean |yaw rate - label| and how often the turn has the label's sign (where the
    label turns by more than 0.1 rad/s) and the speed error, near (< 2.5 m) and far; with noise draws
    also the sign agreement of the noisy mean, how far the noise moves the mean turn, and the spread
    it causes."""
    out = {}
    for looking_at in ("target", "twin", "away"):
        for band, near in (("near", True), ("far", False)):
            sel = [r for r in rows if r.looking_at == looking_at and (r.distance_m < 2.5) == near]
            turning = [r for r in sel if abs(r.label_yaw_rate_radps) > 0.1]
            if not sel:
                continue
            out[f"{looking_at} {band}"] = {
                "rows": len(sel),
                "yaw_rate_error": float(np.mean([abs(r.yaw_rate_radps - r.label_yaw_rate_radps) for r in sel])),
                "turn_sign_agrees": float(np.mean([np.sign(r.yaw_rate_radps) == np.sign(r.label_yaw_rate_radps)
                                                   for r in turning])) if turning else None,
                "forward_error": float(np.mean([abs(r.forward_mps - r.label_forward_mps) for r in sel]))}
            if sel[0].yaw_rate_noise_std is not None:
                out[f"{looking_at} {band}"].update({
                    "turn_sign_agrees_with_noise": float(np.mean([
                        np.sign(r.noisy_yaw_rate_radps) == np.sign(r.label_yaw_rate_radps) for r in turning]))
                    if turning else None,
                    "yaw_rate_noise_shift": float(np.mean([abs(r.noisy_yaw_rate_radps - r.yaw_rate_radps)
                                                           for r in sel])),
                    "yaw_rate_noise_std": float(np.mean([r.yaw_rate_noise_std for r in sel]))})
    return out


def main(argv: list[str] | None = None) -> int:
    from ...paths import default_model_dir

    ap = argparse.ArgumentParser(prog="python -m mobile_vla_ros.tools.simulation.policy_probe", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=None, help="default: models/default")
    ap.add_argument("--task-set", default="hard", choices=TASK_SETS)
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("1000-1019"), help="FIRST-LAST or A,B,C")
    ap.add_argument("--noise-draws", type=int, default=16,
                    help="rest windows with the sim IMU's noise per view and motion (0: noise-free only)")
    ap.add_argument("--out", type=Path, default=None, help="the rows as JSON")
    args = ap.parse_args(argv)
    if args.noise_draws < 0:
        ap.error(f"--noise-draws: expected >= 0, got {args.noise_draws}")
    rows = probe(args.model_dir or default_model_dir(), args.task_set, args.seeds, noise_draws=args.noise_draws)
    print(table(rows))
    totals = summary(rows)
    for kind, values in totals.items():
        print(f"{kind:<12} " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in values.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"summary": totals, "rows": [asdict(r) for r in rows]}, indent=1))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
