"""The simulated robot (MuJoCo, no ROS): a differential-drive base in an arena with coloured
objects, an on-board camera, an IMU from MuJoCo's gyro and accelerometer sensors, and seeded tasks
("go to the red cylinder") with a success radius and a time limit.

Headless rendering: MUJOCO_GL=osmesa (CPU; the default here when unset) or egl (GPU).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

COLORS = {"red": (0.85, 0.1, 0.1), "green": (0.1, 0.7, 0.15), "blue": (0.1, 0.25, 0.9),
          "yellow": (0.95, 0.85, 0.1)}
SHAPES = ("cylinder", "box")
PHRASINGS = ("go to the {color} {shape}", "drive to the {color} {shape}", "move towards the {color} {shape}",
             "navigate to the {color} {shape}", "approach the {color} object")
# Training data only (recordings and grounding renders, with paraphrases=True): more ways of saying it, with
# the object in other places and words after it, so the stand-in VLM learns to find the colour and shape
# anywhere in an instruction. None of them is a held-out phrasing below.
PARAPHRASES = ("the {color} {shape} is where you should go", "get close to the {color} {shape} and wait there",
               "look for the {color} {shape} and drive over", "could you reach the {color} {shape}",
               "stop beside the {color} {shape}", "go near the {color} {shape} please",
               "target: {color} {shape}", "drive until you reach the {color} {shape}",
               "locate the {color} {shape} then approach it", "make your way to the {color} {shape}")
# Never used in training data: the hard set's evaluation phrasings.
HELD_OUT_PHRASINGS = ("head over to the {color} {shape}", "please drive up to the {color} {shape}",
                      "find the {color} {shape} and stop next to it", "your goal is the {color} {shape}")
# Every phrasing an instruction can have (vlm/grounding.py re-aims a task's instruction at another object).
ALL_PHRASINGS = PHRASINGS + PARAPHRASES + HELD_OUT_PHRASINGS
TASK_SETS = ("standard", "hard")
GRAVITY = 9.81


@dataclass(frozen=True)
class SimObject:
    color: str
    shape: str
    x: float
    y: float
    radius: float = 0.22


@dataclass(frozen=True)
class Task:
    """One episode: objects, the target among them, the instruction, and the start pose."""

    seed: int
    objects: tuple[SimObject, ...]
    target: int
    instruction: str
    start: tuple[float, float, float]  # x, y, yaw

    @property
    def target_object(self) -> SimObject:
        return self.objects[self.target]

    @property
    def twins(self) -> tuple[SimObject, ...]:
        """The objects of the target's colour other than the target (the hard set's other shape)."""
        return tuple(o for i, o in enumerate(self.objects) if i != self.target and o.color == self.target_object.color)


@dataclass
class SimConfig:
    physics_hz: float = 650.0        # one IMU sample per physics step
    camera_hz: float = 15.0
    image_size: int = 224
    camera_fovy: float = 75.0        # degrees (square image: horizontal = vertical)
    time_limit: float = 20.0         # s per episode
    success_radius: float = 0.45     # m from the base centre to the target's surface
    objects: int = 3
    gyro_noise: float = 0.004        # rad/s, white, per sample
    accel_noise: float = 0.04        # m/s^2
    # standard: all objects in view at the start, 1.5-2.7 m, distinct colours. hard: the target beside
    # or behind the robot (40-180 deg off the camera axis), 1.5-4 m away, a distractor of the target's
    # colour and the other shape.
    task_set: str = "standard"
    held_out_phrasings: bool = False  # phrase instructions with HELD_OUT_PHRASINGS (evaluation of the hard set)
    paraphrases: bool = False  # training data: PHRASINGS + PARAPHRASES (the task's objects are the same)

    def __post_init__(self) -> None:
        if self.task_set not in TASK_SETS:
            raise ValueError(f"task_set: expected one of {', '.join(TASK_SETS)}, got {self.task_set!r}")
        if self.held_out_phrasings and self.paraphrases:
            raise ValueError("held_out_phrasings (evaluation) and paraphrases (training) exclude each other")

    @property
    def imu_noise(self) -> np.ndarray:
        """White-noise standard deviation of each IMU channel [6]: angular velocity xyz, acceleration xyz."""
        return np.repeat([self.gyro_noise, self.accel_noise], 3)

    @property
    def half_fov(self) -> float:
        """Half the camera's field of view (rad): the bearing out to which an image shows an object."""
        return math.radians(self.camera_fovy / 2)

    @classmethod
    def for_evaluation(cls, task_set: str = "standard", time_limit: float | None = None, **fields) -> SimConfig:
        """How episodes are evaluated: the set's time limit (unless given) and, for the hard set, the
        phrasings never used in training."""
        return cls(task_set=task_set, held_out_phrasings=task_set == "hard",
                   time_limit=time_limit or TIME_LIMITS[task_set], **fields)


# Seconds per episode of each task set (the hard set's targets lie up to 4 m away, behind the robot).
TIME_LIMITS = {"standard": 20.0, "hard": 30.0}


def sample_task(seed: int, cfg: SimConfig | None = None) -> Task:
    """A seeded task of cfg.task_set; the same seed and set give the same task."""
    cfg = cfg or SimConfig()
    if cfg.task_set == "hard":
        return _sample_hard_task(seed, cfg)
    return _sample_standard_task(seed, cfg)


def _phrase(rng: np.random.Generator, cfg: SimConfig, obj: SimObject, colour_unique: bool) -> str:
    phrasings = HELD_OUT_PHRASINGS if cfg.held_out_phrasings else PHRASINGS + PARAPHRASES if cfg.paraphrases \
        else PHRASINGS
    if not colour_unique:  # "the red object" would be ambiguous
        phrasings = tuple(p for p in phrasings if "{shape}" in p)
    return phrasings[int(rng.integers(len(phrasings)))].format(color=obj.color, shape=obj.shape)


def _sample_hard_task(seed: int, cfg: SimConfig) -> Task:
    """Target 40-180 deg off the camera axis (either side), 1.5-4 m away; a distractor of the same
    colour and the other shape and one other object anywhere around; objects at least 0.9 m apart."""
    rng = np.random.default_rng([seed, 1])
    yaw0 = rng.uniform(-math.pi, math.pi)
    start = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), yaw0)
    colors = list(COLORS)
    target_color = colors[int(rng.integers(len(colors)))]
    other_color = [c for c in colors if c != target_color][int(rng.integers(len(colors) - 1))]
    target_shape = SHAPES[int(rng.integers(len(SHAPES)))]
    distractor_shape = SHAPES[1 - SHAPES.index(target_shape)]
    specs = [(target_color, target_shape), (target_color, distractor_shape),
             (other_color, SHAPES[int(rng.integers(len(SHAPES)))])]
    while True:
        target_bearing = rng.choice([-1, 1]) * rng.uniform(math.radians(40), math.pi)
        bearings = [target_bearing, *rng.uniform(-math.pi, math.pi, 2)]
        dists = [rng.uniform(1.5, 4.0), *rng.uniform(1.2, 3.5, 2)]
        points = [(start[0] + d * math.cos(yaw0 + b), start[1] + d * math.sin(yaw0 + b))
                  for b, d in zip(bearings, dists)]
        if all(math.dist(p, q) >= 0.9 for i, p in enumerate(points) for q in points[i + 1:]):
            break
    objects = [SimObject(c, sh, x, y) for (c, sh), (x, y) in zip(specs, points)]
    instruction = _phrase(rng, cfg, objects[0], colour_unique=False)
    order = rng.permutation(len(objects))  # the target's index carries no information
    objects = [objects[i] for i in order]
    return Task(seed, tuple(objects), int(np.argmax(order == 0)), instruction, start)


def _sample_standard_task(seed: int, cfg: SimConfig) -> Task:
    """Objects in front of the robot (all in the camera's view at the start, at least 22 deg apart),
    1.5-2.7 m away; a random target, colour and phrasing."""
    rng = np.random.default_rng(seed)
    yaw0 = rng.uniform(-math.pi, math.pi)
    start = (rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), yaw0)
    half_fov = cfg.half_fov * 0.75
    while True:
        bearings = np.sort(rng.uniform(-half_fov, half_fov, cfg.objects))
        if np.all(np.diff(bearings) > math.radians(22)):
            break
    colors = rng.choice(list(COLORS), cfg.objects, replace=False)
    objects = []
    for bearing, color in zip(bearings, colors):
        dist = rng.uniform(1.5, 2.7)
        objects.append(SimObject(str(color), str(rng.choice(SHAPES)), start[0] + dist * math.cos(yaw0 + bearing),
                                 start[1] + dist * math.sin(yaw0 + bearing)))
    target = int(rng.integers(cfg.objects))
    instruction = _phrase(rng, cfg, objects[target], colour_unique=True)
    return Task(seed, tuple(objects), target, instruction, start)


def world_xml(task: Task, cfg: SimConfig) -> str:
    """MJCF of the arena for a task. The base moves on planar joints (x, y, yaw) driven by velocity
    actuators with force limits, so commands take effect with a realistic lag and the IMU sees it."""
    objects = []
    for i, obj in enumerate(task.objects):
        r, g, b = COLORS[obj.color]
        if obj.shape == "cylinder":
            geom = f'type="cylinder" size="{obj.radius} 0.3"'
        else:
            geom = f'type="box" size="{obj.radius * 0.85} {obj.radius * 0.85} 0.3"'
        objects.append(f'<geom name="object{i}" {geom} pos="{obj.x} {obj.y} 0.3" rgba="{r} {g} {b} 1" '
                       f'contype="0" conaffinity="0"/>')
    return f"""<mujoco model="mobile_vla_arena">
  <option timestep="{1.0 / cfg.physics_hz}" gravity="0 0 -{GRAVITY}"/>
  <visual><quality shadowsize="0" offsamples="0"/><global offwidth="{cfg.image_size}"
    offheight="{cfg.image_size}"/><headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.55 0.55 0.52" rgb2="0.45 0.45 0.43"
      width="256" height="256"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <geom name="floor" type="plane" size="8 8 0.1" material="floor" contype="0" conaffinity="0"/>
    {"".join(objects)}
    <body name="base" pos="0 0 0.1">
      <joint name="x" type="slide" axis="1 0 0" ref="0" damping="0.05"/>
      <joint name="y" type="slide" axis="0 1 0" damping="0.05"/>
      <joint name="yaw" type="hinge" axis="0 0 1" damping="0.01"/>
      <geom type="box" size="0.2 0.15 0.08" mass="6" rgba="0.2 0.2 0.2 1" contype="0" conaffinity="0"/>
      <camera name="front" pos="0.2 0 0.2" xyaxes="0 -1 0 0.1 0 1" fovy="{cfg.camera_fovy}"/>
      <site name="imu" pos="0 0 0"/>
    </body>
  </worldbody>
  <actuator>
    <velocity name="vx" joint="x" kv="120" forcerange="-30 30"/>
    <velocity name="vy" joint="y" kv="120" forcerange="-30 30"/>
    <velocity name="wz" joint="yaw" kv="12" forcerange="-4 4"/>
  </actuator>
  <sensor>
    <gyro name="gyro" site="imu"/>
    <accelerometer name="accel" site="imu"/>
  </sensor>
</mujoco>"""


def wrap_angle(angle):
    """To [-pi, pi) (elementwise on arrays)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi


def in_view(bearing, band: float):
    """Whether an image shows an object at `bearing` (rad from the camera axis): strictly within `band`,
    half the field of view (`SimConfig.half_fov`) for what the camera shows, narrower for the recording
    drivers' sighting. Elementwise. The grounding's "visible", the action labels' "the image showed the
    target" and the probes all use this one rule."""
    return np.abs(bearing) < band


def bearing_and_distance(x, y, yaw, target):
    """Bearing of the target's centre from the base (rad, wrapped) and distance to its surface (m), the
    success measure; `target` [..., 3] is (x, y, radius). Elementwise: the robot and the training
    labels (sim/expert_labels.py) use this one definition."""
    target = np.asarray(target, dtype=np.float64)
    dx, dy = target[..., 0] - x, target[..., 1] - y
    return wrap_angle(np.arctan2(dy, dx) - yaw), np.hypot(dx, dy) - target[..., 2]


class SimRobot:
    """One task's world. `step(v, w)` advances one physics step (1/physics_hz s) with body-frame
    command v (m/s), w (rad/s) and returns the IMU sample [gyro xyz, accel xyz] in the body frame."""

    def __init__(self, task: Task, cfg: SimConfig | None = None, render: bool = True):
        import mujoco

        self._mj = mujoco
        self.cfg = cfg or SimConfig()
        self.task = task
        self.model = mujoco.MjModel.from_xml_string(world_xml(task, self.cfg))
        self.data = mujoco.MjData(self.model)
        self.place(*task.start)
        self._rng = np.random.default_rng(task.seed + 7919)
        self._renderer = mujoco.Renderer(self.model, self.cfg.image_size, self.cfg.image_size) if render else None
        self._object_of_geom = None  # made on the first render_objects()
        self.steps = 0
        target = task.target_object
        self._target = np.array([target.x, target.y, target.radius])

    def place(self, x: float, y: float, yaw: float) -> None:
        """Put the base at a pose (at rest) without simulating the way there: for renders at chosen poses."""
        self.data.qpos[:] = (x, y, yaw)
        self._mj.mj_forward(self.model, self.data)

    @property
    def time(self) -> float:
        return self.steps / self.cfg.physics_hz

    def step(self, v: float, w: float) -> np.ndarray:
        yaw = float(self.data.qpos[2])
        self.data.ctrl[:] = (v * math.cos(yaw), v * math.sin(yaw), w)
        self._mj.mj_step(self.model, self.data)
        self.steps += 1
        gyro, accel = self.data.sensordata[0:3], self.data.sensordata[3:6]
        noise = self._rng.standard_normal(6) * self.cfg.imu_noise
        return (np.concatenate([gyro, accel]) + noise).astype(np.float32)

    def render(self) -> np.ndarray:
        """The front camera, rgb8 [H, W, 3]."""
        if self._renderer is None:
            raise RuntimeError("SimRobot was created with render=False")
        self._renderer.update_scene(self.data, camera="front")
        return self._renderer.render().copy()

    def render_objects(self) -> np.ndarray:
        """Which of the task's objects each pixel of the front camera shows: int16 [H, W], the index into
        `task.objects`, -1 where none (floor, sky, the robot). Labels for training perception."""
        if self._renderer is None:
            raise RuntimeError("SimRobot was created with render=False")
        if self._object_of_geom is None:
            lookup = np.full(self.model.ngeom + 1, -1, dtype=np.int16)  # geom id -1 (nothing) -> the last entry
            for i in range(len(self.task.objects)):
                lookup[self._mj.mj_name2id(self.model, self._mj.mjtObj.mjOBJ_GEOM, f"object{i}")] = i
            self._object_of_geom = lookup
        # The camera's own renderer in segmentation mode: a second renderer is a second GL context per
        # world, which costs more than the renders on EGL.
        self._renderer.enable_segmentation_rendering()
        try:
            self._renderer.update_scene(self.data, camera="front")
            geoms = self._renderer.render()[..., 0]  # each pixel's geom id, -1 where none
        finally:
            self._renderer.disable_segmentation_rendering()
        return self._object_of_geom[geoms]

    def pose(self) -> tuple[float, float, float]:
        x, y, yaw = self.data.qpos[:3]
        return float(x), float(y), wrap_angle(float(yaw))

    @property
    def unwrapped_yaw(self) -> float:
        """Yaw summed over the episode (not wrapped): differences give the turn between two times."""
        return float(self.data.qpos[2])

    def velocity(self) -> tuple[float, float]:
        """Body-frame forward speed and yaw rate."""
        vx, vy, w = self.data.qvel[:3]
        yaw = float(self.data.qpos[2])
        return float(vx * math.cos(yaw) + vy * math.sin(yaw)), float(w)

    def target_distance(self) -> float:
        """Base centre to the target's surface, m."""
        return float(bearing_and_distance(*self.pose(), self._target)[1])

    def target_bearing(self) -> float:
        return float(bearing_and_distance(*self.pose(), self._target)[0])

    def succeeded(self) -> bool:
        return self.target_distance() <= self.cfg.success_radius

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
        self._renderer = None

    def __enter__(self) -> SimRobot:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
