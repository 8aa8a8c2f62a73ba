"""mobile-vla-record-sim: record episodes of the simulated robot driven by the scripted expert as
rosbag2 bags (rosbags; sqlite3 or mcap), one bag per episode: the training and evaluation data of
mobile-vla-train / mobile-vla-eval.

Topics (as on the robot): /camera/image_raw (rgb8, camera_hz), /sensor (Imu, 650 Hz), /instruction,
/cmd_vel (Twist, 50 Hz: the expert's command, i.e. the action label), plus /sim/executed_cmd_vel
(what the base executed: the motion input of the action expert integrates it),
/sim/ground_truth_pose (PoseStamped, 50 Hz) and /sim/task (the task as JSON). With --action-noise
the base executes the expert's command plus temporally correlated noise (DART-style), and with
--expert-delay-max the expert's command for an older state (as a policy on old images drives), so
the data also shows how to recover from the errors a learned policy makes; the label stays clean.

With --policy-driver MODEL_DIR the base is driven by a learned policy through the robot's own code
(`ClosedLoopEpisode`: VLM schedule, VLM, action core, chunk executor, in sim time, at a VLM latency
drawn per episode): the states that policy reaches, its mistakes included, for relabelling with
`mobile-vla-train --labels sim-expert` (DAgger's data aggregation). /cmd_vel still carries the
memory expert's command.

Episodes use seeds S..S+N-1; a bag that is already complete is kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from ...sim import cannot_simulate
from ...sim.episode import ACTION_LIMITS, DRIVER_IN_VIEW, Expert, SimEpisode, expert_command_at, steer_command
from ...sim.expert_labels import informed_command, perceived_target
from ...sim.messages import FRAMES, ORIENTATION_UNKNOWN, SIM_EPOCH, TOPICS, split_stamp, task_json, yaw_quaternion
from ...sim.world import TASK_SETS, TIME_LIMITS, SimConfig, bearing_and_distance, sample_task
from ..cli import progress_bar
from .closed_loop import ClosedLoopEpisode, LoopConfig, load_policy

CONTROL_HZ = 50.0


class BagRecorder:
    """rosbags writer for the sim topics; times are sim seconds (SIM_EPOCH added)."""

    def __init__(self, path: Path, storage: str) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_HUMBLE)
        self.T = self.store.types
        plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
        self.writer = Writer(path, version=8, storage_plugin=plugin)
        self.writer.open()
        types = {"image": "sensor_msgs/msg/Image", "sensor": "sensor_msgs/msg/Imu",
                 "instruction": "std_msgs/msg/String", "cmd_vel": "geometry_msgs/msg/Twist",
                 "executed_cmd_vel": "geometry_msgs/msg/Twist",
                 "pose": "geometry_msgs/msg/PoseStamped", "task": "std_msgs/msg/String"}
        self.conns = {role: (self.writer.add_connection("/" + TOPICS[role], msgtype, typestore=self.store), msgtype)
                      for role, msgtype in types.items()}

    def _header(self, t: float, frame: str):
        return self.T["std_msgs/msg/Header"](self.T["builtin_interfaces/msg/Time"](*split_stamp(SIM_EPOCH + t)), frame)

    def _write(self, role: str, t: float, msg) -> None:
        conn, msgtype = self.conns[role]
        self.writer.write(conn, int(round((SIM_EPOCH + t) * 1e9)), self.store.serialize_cdr(msg, msgtype))

    def string(self, role: str, t: float, text: str) -> None:
        self._write(role, t, self.T["std_msgs/msg/String"](text))

    def image(self, t: float, rgb: np.ndarray) -> None:
        h, w, _ = rgb.shape
        self._write("image", t, self.T["sensor_msgs/msg/Image"](self._header(t, FRAMES["image"]), h, w, "rgb8", 0,
                                                                 w * 3, rgb.reshape(-1)))

    def imu(self, t: float, sample: np.ndarray) -> None:
        V3, cov = self.T["geometry_msgs/msg/Vector3"], np.zeros(9)
        self._write("sensor", t, self.T["sensor_msgs/msg/Imu"](
            self._header(t, FRAMES["sensor"]), self.T["geometry_msgs/msg/Quaternion"](0, 0, 0, 1),
            ORIENTATION_UNKNOWN, V3(*map(float, sample[:3])), cov, V3(*map(float, sample[3:])), cov))

    def command(self, t: float, v: float, w: float, role: str = "cmd_vel") -> None:
        V3 = self.T["geometry_msgs/msg/Vector3"]
        self._write(role, t, self.T["geometry_msgs/msg/Twist"](V3(float(v), 0, 0), V3(0, 0, float(w))))

    def pose(self, t: float, x: float, y: float, yaw: float) -> None:
        P = self.T
        self._write("pose", t, P["geometry_msgs/msg/PoseStamped"](self._header(t, FRAMES["pose"]), P[
            "geometry_msgs/msg/Pose"](P["geometry_msgs/msg/Point"](x, y, 0.0),
                                      P["geometry_msgs/msg/Quaternion"](*yaw_quaternion(yaw)))))

    def close(self) -> None:
        self.writer.close()


def deployment_vlm_period(latency: float) -> float:
    """The VLM period deployments pair with a forward latency: 0.3 s (3.33 Hz) for fast VLMs, else the
    latency / 0.88 (1.7 s, 0.59 Hz, for a 1.5 s VLM)."""
    return max(0.3, latency / 0.88)


TWIN_DETOUR_END = 0.6  # m from the twin's surface: close enough that its shape is plain in the image
TWIN_DETOUR_MAX = 10.0  # s


class ImageInformedDriver:
    """The rule the action expert is trained on (`image_informed_command`) as the driver of a recording,
    with the perception (sightings within DRIVER_IN_VIEW) of images taken every `period` s and known
    `latency` s later: the states a policy at a slow VLM reaches (a search step, then standing still
    until the next image), which the continuously searching memory expert never shows."""

    def __init__(self, latency: float, period: float, phase: float) -> None:
        self.latency, self.period, self.next_capture = latency, period, phase
        self.pending: list[tuple[float, np.ndarray]] = []  # (available at, perceived_target of the image)
        self.perceived: np.ndarray | None = None

    def command(self, t: float, robot) -> tuple[float, float]:
        if t >= self.next_capture:
            self.pending.append((t + self.latency, perceived_target(robot, DRIVER_IN_VIEW)))
            self.next_capture += self.period
        while self.pending and self.pending[0][0] <= t:
            self.perceived = self.pending.pop(0)[1]
        if self.perceived is None:  # no image yet: stand still, as the policy without features does
            return 0.0, 0.0
        return informed_command(robot, self.perceived)


def record_episode(seed: int, out: Path, storage: str, cfg: SimConfig, action_noise: float,
                   expert_delay_max: float = 0.0, twin_detour: float = 0.0, informed_latency_max: float = 0.0) -> dict:
    """Drive one episode with the expert and write it to `out`; returns the episode summary.

    The label on /cmd_vel is always the expert's command for the current state. What the base
    executes may differ: with `expert_delay_max` > 0 it is the expert's command for the state of
    delta seconds ago (delta drawn per episode in [0, max]), as a policy acting on old images would
    drive, so the data shows the overshoots of a slow VLM and how to recover; `action_noise` adds
    correlated noise on top. With probability `twin_detour` (tasks with a same-colour twin) the base
    first drives to the twin, as a policy that took it for the target would, until TWIN_DETOUR_END
    from it; then the expert starts afresh (searching): the data shows how to recover from that mistake.
    With `informed_latency_max` > 0 the base is driven by `ImageInformedDriver` instead, with a VLM
    latency drawn per episode in [0, max] and images every max(0.3 s, latency / 0.88) (the
    deployments' VLM periods: 0.3 s at 3.33 Hz, 1.7 s for a 1.5 s VLM at 0.59 Hz)."""
    task = sample_task(seed, cfg)
    rng = np.random.default_rng(seed + 15485863)
    delay_steps = int(round(rng.uniform(0.0, expert_delay_max) * CONTROL_HZ)) if expert_delay_max > 0 else 0
    # Drawn only when asked for: recordings without detours keep their noise streams.
    twin = next(iter(task.twins), None) if twin_detour > 0 and rng.uniform() < twin_detour else None
    twin_xyr = None if twin is None else (twin.x, twin.y, twin.radius)
    driver = None
    if informed_latency_max > 0:
        latency = rng.uniform(0.0, informed_latency_max)
        period = deployment_vlm_period(latency)
        driver = ImageInformedDriver(latency, period, phase=rng.uniform(0.0, period))
    expert = Expert()
    states: list[tuple[float, float, bool]] = []  # (bearing, distance, target seen) at each control step
    limits = np.array(ACTION_LIMITS)
    noise = np.zeros(2)
    episode = SimEpisode(task, cfg)
    bag = BagRecorder(out, storage)
    try:
        bag.string("task", 0.0, task_json(task))
        bag.string("instruction", 0.0, task.instruction)
        k = 0
        while not episode.done:
            t = k / CONTROL_HZ
            bearing, distance = episode.robot.target_bearing(), episode.robot.target_distance()
            states.append((bearing, distance, expert.observe(bearing)))
            bag.command(t, *expert_command_at(*states[-1]))
            acted = expert_command_at(*states[max(0, len(states) - 1 - delay_steps)]) if driver is None \
                else driver.command(t, episode.robot)
            if twin_xyr is not None:
                twin_bearing, twin_distance = bearing_and_distance(*episode.robot.pose(), twin_xyr)
                if twin_distance > TWIN_DETOUR_END and t < TWIN_DETOUR_MAX:
                    acted = tuple(float(c) for c in steer_command(twin_bearing, twin_distance))
                else:  # the mistake is seen: from here the expert as it would start (searching)
                    twin_xyr, expert = None, Expert()
                    states = [(bearing, distance, expert.observe(bearing))]
            bag.pose(t, *episode.robot.pose())
            # Ornstein-Uhlenbeck noise (0.5 s correlation) on the executed command only.
            noise += -noise * (1.0 / CONTROL_HZ / 0.5) + rng.standard_normal(2) * action_noise * limits * 0.2
            executed = np.clip(np.array(acted) + noise, -limits, limits)
            bag.command(t, *executed, role="executed_cmd_vel")
            k += 1
            for event in episode.advance(float(executed[0]), float(executed[1]), k / CONTROL_HZ):
                if event.kind == "imu":
                    bag.imu(event.t, event.data)
                else:
                    bag.image(event.t, event.data)
        return episode.result().to_dict() | {"bag": out.name}
    finally:
        bag.close()
        episode.close()


class PolicyRecording(ClosedLoopEpisode):
    """A closed-loop episode of a learned policy written to a bag as `record_episode` writes the
    expert's: the sensor and camera events as the loop consumes them, and at each cmd_vel step the
    executed command, the ground-truth pose and the memory expert's command for that state."""

    def __init__(self, task, sim_cfg: SimConfig, cfg: LoopConfig, spec, backend, extractor, bag: BagRecorder) -> None:
        super().__init__(task, sim_cfg, cfg, spec, backend, extractor)
        self.bag, self.expert = bag, Expert()

    def _feed(self, events) -> None:
        events = list(events)
        for event in events:
            if event.kind == "imu":
                self.bag.imu(event.t, event.data)
            else:
                self.bag.image(event.t, event.data)
        super()._feed(events)

    def _execute(self, t: float) -> None:
        super()._execute(t)
        robot = self.episode.robot
        bearing = robot.target_bearing()
        self.bag.command(t, *expert_command_at(bearing, robot.target_distance(), self.expert.observe(bearing)))
        self.bag.pose(t, *robot.pose())
        self.bag.command(t, *self._twist(self.command), role="executed_cmd_vel")


def policy_latency(seed: int, latency_max: float) -> tuple[float, float]:
    """(VLM latency, vlm_hz) of a policy-driven episode: the latency drawn per episode in [0, max], the
    rate the deployments pair with it (3.33 Hz down to 0.59 Hz for a 1.5 s VLM)."""
    latency = float(np.random.default_rng([seed, 15485863]).uniform(0.0, latency_max))
    return latency, 1.0 / deployment_vlm_period(latency)


_POLICIES: dict[str, tuple] = {}  # model dir -> (spec, backend, extractor), loaded once per process


def _policy(model_dir: Path) -> tuple:
    key = str(model_dir)
    if key not in _POLICIES:
        _POLICIES[key] = load_policy(model_dir)
    return _POLICIES[key]


def record_policy_episode(seed: int, out: Path, storage: str, cfg: SimConfig, model_dir: Path,
                          latency_max: float) -> dict:
    """Drive one episode with the policy in `model_dir` (`PolicyRecording`) and write it to `out`."""
    task = sample_task(seed, cfg)
    latency, vlm_hz = policy_latency(seed, latency_max)
    bag = BagRecorder(out, storage)
    loop = PolicyRecording(task, cfg, LoopConfig(vlm_hz=vlm_hz, vlm_latency=latency), *_policy(model_dir), bag)
    try:
        bag.string("task", 0.0, task_json(task))
        bag.string("instruction", 0.0, task.instruction)
        return loop.run() | {"bag": out.name, "vlm_latency": latency, "vlm_hz": vlm_hz}
    finally:
        bag.close()
        loop.close()


def _complete(bag: Path) -> bool:
    return (bag / "metadata.yaml").is_file()


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="mobile-vla-record-sim", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0, help="first episode's seed (episodes use seed..seed+N-1)")
    ap.add_argument("--out", type=Path, required=True, help="directory; one bag per episode inside")
    ap.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    ap.add_argument("--action-noise", type=float, default=0.5,
                    help="executed-command noise, as a fraction of 0.2 x the action limits per step (0 = none)")
    ap.add_argument("--expert-delay-max", type=float, default=0.0,
                    help="s; the base executes the expert's command for the state up to this long ago (per "
                         "episode), as a policy on old images would, while /cmd_vel keeps the current label")
    ap.add_argument("--task-set", choices=TASK_SETS, default="standard",
                    help="hard: targets beside/behind the robot, same-colour distractors, up to 4 m "
                         "(training phrasings; the evaluation of the hard set uses held-out ones)")
    ap.add_argument("--time-limit", type=float, default=None, help="s per episode (default: the task set's)")
    ap.add_argument("--paraphrases", action="store_true",
                    help="phrase instructions with the training paraphrases too (training data; never the "
                         "hard set's held-out evaluation phrasings)")
    ap.add_argument("--twin-detour", type=float, default=0.0, metavar="P",
                    help="probability per episode (tasks with a same-colour twin) that the base first drives to "
                         "the twin, then the expert recovers: data for the policy's likeliest mistake")
    ap.add_argument("--informed-latency-max", type=float, default=0.0, metavar="S",
                    help="s; the base is driven by the image-informed rule the policy is trained on, acting on "
                         "images delivered up to S s late (per episode), instead of the memory expert")
    ap.add_argument("--policy-driver", type=Path, default=None, metavar="MODEL_DIR",
                    help="drive the base with this learned policy through the robot's code (closed loop, sim time) "
                         "instead of the expert: the states it reaches, for relabelling (DAgger)")
    ap.add_argument("--policy-latency-max", type=float, default=1.5, metavar="S",
                    help="s; with --policy-driver, the VLM latency drawn per episode in [0, S]")
    ap.add_argument("--workers", type=int, default=1, help="episodes recorded in parallel (processes)")
    return ap


def _record_job(job: tuple) -> tuple[int, dict]:
    seed, bag, storage, cfg, options = job
    shutil.rmtree(bag, ignore_errors=True)  # an interrupted, incomplete bag
    if "policy_driver" in options:
        return seed, record_policy_episode(seed, bag, storage, cfg, options["policy_driver"],
                                           options["policy_latency_max"])
    return seed, record_episode(seed, bag, storage, cfg, **options)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    reason = cannot_simulate(args.episodes)
    if reason:
        print(f"mobile-vla-record-sim: error: {reason}", file=sys.stderr)
        return 2
    drivers = [name for name, given in (("--informed-latency-max", args.informed_latency_max > 0),
                                        ("--expert-delay-max", args.expert_delay_max > 0),
                                        ("--policy-driver", args.policy_driver is not None)) if given]
    if len(drivers) > 1:
        print(f"mobile-vla-record-sim: error: {' and '.join(drivers)} choose the driver; give one", file=sys.stderr)
        return 2
    cfg = SimConfig(time_limit=args.time_limit or TIME_LIMITS[args.task_set], task_set=args.task_set,
                    paraphrases=args.paraphrases)
    args.out.mkdir(parents=True, exist_ok=True)
    summary_path = args.out / "episodes.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    began = time.monotonic()
    seeds = range(args.seed, args.seed + args.episodes)
    options = {"action_noise": args.action_noise, "expert_delay_max": args.expert_delay_max,
               "twin_detour": args.twin_detour, "informed_latency_max": args.informed_latency_max}
    if args.policy_driver is not None:
        options = {"policy_driver": args.policy_driver, "policy_latency_max": args.policy_latency_max}
    jobs = [(seed, args.out / f"episode_{seed:05d}", args.storage, cfg, options)
            for seed in seeds if not (_complete(args.out / f"episode_{seed:05d}") and str(seed) in summary)]

    def record_all():
        if args.workers <= 1 or len(jobs) <= 1:
            yield from map(_record_job, jobs)
            return
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(min(args.workers, len(jobs))) as pool:
            yield from pool.imap_unordered(_record_job, jobs)

    for done_count, (seed, episode) in enumerate(record_all(), start=args.episodes - len(jobs) + 1):
        summary[str(seed)] = episode
        summary_path.write_text(json.dumps(summary, indent=1, sort_keys=True))
        progress_bar(f"recording {args.episodes} episodes", done_count / args.episodes)
    print()
    done = [summary[str(args.seed + i)] for i in range(args.episodes)]
    print(f"{len(done)} episodes in {args.out} ({args.storage}), driver success "
          f"{sum(d['success'] for d in done)}/{len(done)}, {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
