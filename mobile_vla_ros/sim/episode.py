"""Episodes of the simulated robot, independent of ROS and of wall time: physics is advanced to a
requested sim time under the current command, producing the sensor events (IMU every physics step,
camera frames at camera_hz) a driver publishes or records. Also the privileged scripted expert and
the zero/random baselines, which drive episodes in-process."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .world import SimConfig, SimRobot, Task, in_view

ACTION_LIMITS = (0.5, 1.0)  # |linear.x| m/s, |angular.z| rad/s: config/robot.yaml's action_limits


@dataclass
class SensorEvent:
    kind: str  # "imu" | "image"
    t: float   # sim time, s
    data: np.ndarray


@dataclass
class EpisodeResult:
    seed: int
    instruction: str
    success: bool
    duration: float  # s of sim time until success or the time limit
    final_distance: float
    path: list[tuple[float, float]] = field(default_factory=list)  # base x, y at 10 Hz, to the millimetre
    objects: list[dict] = field(default_factory=list)
    target: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class SimEpisode:
    """One task run: `advance(v, w, until)` steps physics with the command held until sim time `until`."""

    def __init__(self, task: Task, cfg: SimConfig | None = None, render: bool = True,
                 frame_source: Callable[[SimRobot], np.ndarray] | None = None):
        """Camera events carry a render, or with `frame_source` (and render=False) what it makes of
        the robot's state at that frame's time (e.g. ground-truth perception), or are left out."""
        self.cfg = cfg or SimConfig()
        self.task = task
        self.robot = SimRobot(task, self.cfg, render=render)
        self._frame = SimRobot.render if render else frame_source
        self._frames = 0
        self._path: list[tuple[float, float]] = []
        self.started_at = 0.0  # sim time the episode's clock started (after a pause showing the scene)
        self.done = False
        self.success = False

    @property
    def time(self) -> float:
        """Sim seconds since the world was created (pause included)."""
        return self.robot.time

    @property
    def elapsed(self) -> float:
        """Sim seconds since `start`: what the time limit applies to."""
        return self.robot.time - self.started_at

    def start(self) -> None:
        """Start the episode's clock now (after a pause in which the base was held still)."""
        self.started_at = self.robot.time

    def before(self, until: float) -> bool:
        """Whether a physics step still lies before sim time `until` (the step nearest it is the last:
        `advance` ends within half a step of `until`, never exactly on it)."""
        return self.robot.time + 0.5 / self.cfg.physics_hz < until

    def advance(self, v: float, w: float, until: float, active: bool = True) -> list[SensorEvent]:
        """Step physics with the command (v, w) held until sim time `until`; with active=False
        (a pause) the command is ignored and success and the time limit are not evaluated."""
        events = []
        path_every = max(1, round(self.cfg.physics_hz / 10))
        while not self.done and self.before(until):
            if self._frame is not None and self.robot.time + 1e-9 >= self._frames / self.cfg.camera_hz:
                events.append(SensorEvent("image", self.robot.time, self._frame(self.robot)))
                self._frames += 1
            if active and self.robot.steps % path_every == 0:
                self._path.append(self._position())
            imu = self.robot.step(v, w) if active else self.robot.step(0.0, 0.0)
            events.append(SensorEvent("imu", self.robot.time, imu))
            if not active:
                continue
            if self.robot.succeeded():
                self.done = self.success = True
            elif self.elapsed >= self.cfg.time_limit:
                self.done = True
        return events

    def _position(self) -> tuple[float, float]:
        x, y = self.robot.pose()[:2]
        return round(float(x), 3), round(float(y), 3)

    def result(self) -> EpisodeResult:
        return EpisodeResult(self.task.seed, self.task.instruction, self.success, self.elapsed,
                             self.robot.target_distance(), [*self._path, self._position()],
                             [{"color": o.color, "shape": o.shape, "x": o.x, "y": o.y, "radius": o.radius}
                              for o in self.task.objects], self.task.target)

    def close(self) -> None:
        self.robot.close()


SEARCH_RATE = 0.6  # rad/s, counter-clockwise, until the target has been in view
# |bearing| within which an image shows the target: half the camera's field of view, where the grounded
# VLM's "visible" switches (vlm/grounding.py). The action labels steer to a target shown and search
# counter-clockwise otherwise; a narrower band (30 deg until 2026-12-04) had them search left for a
# target the image shows at its right edge, where similar images ask to turn right.
IN_VIEW = SimConfig().half_fov
# The recording drivers' band for a sighting (`Expert`, record_sim's `ImageInformedDriver`): kept at
# 30 deg so that make_default_model records the episodes the shipped models were trained on. The
# labels do not depend on it: the trainer recomputes them from the recorded poses with IN_VIEW.
DRIVER_IN_VIEW = math.radians(30)
# The most a search turns past the image it acts on (rad), less than the 75 deg band of IN_VIEW: a
# policy that reuses an image for 1.7 s turns one step, waits for the next image and cannot turn
# past a target between two images; at a 0.3 s VLM the step is never reached.
SEARCH_STEP = 0.9


class Expert:
    """Privileged scripted expert with the memory a camera agent has. Until the target has been in
    view it searches by turning counter-clockwise in place: a policy cannot know on which side an
    unseen target lies, so the expert does only what a policy can learn (one way round), and does not
    steer towards a target it could not have seen. Once seen, it steers to the target's position
    (known from then on, as the policy knows it from the features of that image plus the motion since)
    by the shorter way: a policy that turned past the target turns back, it does not go round."""

    def __init__(self) -> None:
        self.target_seen = False

    def observe(self, bearing: float) -> bool:
        """Update the memory with the target's current bearing; returns whether it has been seen."""
        self.target_seen = self.target_seen or bool(in_view(bearing, DRIVER_IN_VIEW))
        return self.target_seen

    def command(self, robot: SimRobot) -> tuple[float, float]:
        """The command at the robot's current pose (updates the memory)."""
        bearing = robot.target_bearing()
        return expert_command_at(bearing, robot.target_distance(), self.observe(bearing))


def steer_command(bearing, distance) -> tuple[np.ndarray, np.ndarray]:
    """(v, w) towards the target (elementwise on arrays): P on bearing, drive when roughly aligned,
    slow down near it."""
    bearing, distance = np.asarray(bearing, dtype=np.float64), np.asarray(distance, dtype=np.float64)
    w = np.clip(1.8 * bearing, -ACTION_LIMITS[1], ACTION_LIMITS[1])
    v = np.clip(0.5 * distance + 0.1, 0.0, 0.45) * np.maximum(0.0, np.cos(bearing)) ** 4
    return v, w


def expert_command_at(bearing: float, distance: float, target_seen: bool = True) -> tuple[float, float]:
    """Search (turn counter-clockwise) while the target has not been seen; otherwise steer to it."""
    if not target_seen:
        return 0.0, SEARCH_RATE
    v, w = steer_command(bearing, distance)
    return float(v), float(w)


def image_informed_command(bearing, distance, target_in_image, yaw_since_image) -> tuple[np.ndarray, np.ndarray]:
    """The expert's command with the information of one image, as the action expert has it (elementwise).

    `target_in_image`: the target was within IN_VIEW in the image the features come from; then steer
    to where it is now (the image's bearing less the motion since, which the policy is given).
    Otherwise search: turn counter-clockwise until `yaw_since_image` reaches SEARCH_STEP, then hold
    still until a newer image arrives. Every branch depends only on what the policy sees, so the
    labels are learnable at any feature age, where the memory `Expert` acts on sightings the policy's
    (older) image does not show."""
    v, w = steer_command(bearing, distance)
    in_image = np.asarray(target_in_image, dtype=bool)
    search_w = np.where(np.asarray(yaw_since_image) < SEARCH_STEP, SEARCH_RATE, 0.0)
    return np.where(in_image, v, 0.0), np.where(in_image, w, search_w)


def run_baseline(task: Task, policy: str, cfg: SimConfig | None = None, control_hz: float = 10.0) -> EpisodeResult:
    """Drive an episode without the camera: `zero` (no motion) or `random` (uniform in the action
    limits, a new command every control period, seeded by the task)."""
    rng = np.random.default_rng(task.seed + 104729)
    episode = SimEpisode(task, cfg, render=False)
    try:
        k = 0
        while not episode.done:
            if policy == "zero":
                v, w = 0.0, 0.0
            elif policy == "random":
                v, w = (rng.uniform(-a, a) for a in ACTION_LIMITS)
            else:
                raise ValueError(f"unknown baseline {policy!r}: zero | random")
            k += 1
            episode.advance(v, w, k / control_hz)
        return episode.result()
    finally:
        episode.close()
