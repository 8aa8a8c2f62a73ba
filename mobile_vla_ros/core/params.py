"""Parameter specifications of both nodes: names, types, defaults, ranges, and validation.

One table per node; the rclpy nodes declare their parameters from it and reject bad values with
the reason `validate` returns, so the rules live here and are unit-tested without ROS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .names import IMAGE_TOPIC

DOUBLE, INTEGER, BOOL, STRING, STRING_ARRAY, DOUBLE_ARRAY = (
    "double",
    "integer",
    "bool",
    "string",
    "string_array",
    "double_array",
)

VLM_BACKENDS = ("kosmos2", "kosmos2_clip", "qwen2_5_vl")
FEATURE_POOLINGS = ("last_token", "mean_text", "mean_image")
INFERENCE_BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
SENSOR_TYPES = ("imu", "wrench")
TWIST_FIELDS = ("linear.x", "linear.y", "linear.z", "angular.x", "angular.y", "angular.z", "")


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter. `live` parameters may change at run time; the others are read-only."""

    name: str
    type: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    live: bool = False


def _is_sequence(value: Any) -> bool:
    """Lists, tuples, and the array.array rclpy uses for double arrays; not strings."""
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__") and hasattr(value, "__iter__")


def validate(spec: ParamSpec, value: Any) -> str | None:
    """Return None when `value` is acceptable for `spec`, else a reason a user can act on."""
    kind = spec.type
    if kind == DOUBLE:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{spec.name}: expected a number, got {type(value).__name__}"
        values = [float(value)]
    elif kind == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{spec.name}: expected an integer, got {type(value).__name__}"
        values = [value]
    elif kind == BOOL:
        return None if isinstance(value, bool) else f"{spec.name}: expected true/false, got {value!r}"
    elif kind == STRING:
        if not isinstance(value, str):
            return f"{spec.name}: expected a string, got {type(value).__name__}"
        if spec.choices is not None and value not in spec.choices:
            return f"{spec.name}: {value!r} is not one of {', '.join(spec.choices)}"
        return None
    elif kind == STRING_ARRAY:
        if not _is_sequence(value) or not all(isinstance(v, str) for v in value):
            return f"{spec.name}: expected a list of strings"
        bad = [v for v in value if spec.choices is not None and v not in spec.choices]
        if bad:
            return f"{spec.name}: {bad[0]!r} is not one of {', '.join(repr(c) for c in spec.choices)}"
        return None
    elif kind == DOUBLE_ARRAY:
        if not _is_sequence(value) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in value):
            return f"{spec.name}: expected a list of numbers"
        values = [float(v) for v in value]
    else:  # pragma: no cover - a spec table error, caught by the unit tests
        raise ValueError(f"unknown parameter type {kind!r}")
    for v in values:
        if not math.isfinite(v):
            return f"{spec.name}: {v} is not finite"
        if (spec.low is not None and v < spec.low) or (spec.high is not None and v > spec.high):
            return f"{spec.name}: {v} is outside the allowed range [{spec.low}, {spec.high}]"
    return None


# Both nodes are managed (lifecycle) nodes; this decides whether they arm themselves.
AUTOSTART = ParamSpec("autostart", BOOL, True, "Configure and activate at start-up. false: the node waits "
                      "unconfigured until the operator runs `ros2 lifecycle set <node> configure`, then "
                      "`activate`; nothing is published before (the arm step).")

VLM_NODE_PARAMS: tuple[ParamSpec, ...] = (
    AUTOSTART,
    ParamSpec("vlm_hz", DOUBLE, 3.33, "Rate of VLM forwards (Hz). A tick is skipped while a forward "
              "is still running.", 0.1, 10.0, live=True),
    ParamSpec("vlm_backend", STRING, "kosmos2", "VLM feature extractor.", choices=VLM_BACKENDS),
    ParamSpec("model_path", STRING, "", "Local directory of the VLM (from_pretrained layout). "
              "Empty: the stand-in VLM shipped in models/default/vlm."),
    ParamSpec("clip_model_path", STRING, "", "Local CLIP directory (kosmos2_clip only)."),
    ParamSpec("device", STRING, "cuda", "Torch device of the VLM.", choices=("cuda", "cpu")),
    ParamSpec("dtype", STRING, "fp16", "VLM weight/compute dtype (fp16/bf16 need cuda; int8w: int8 weights, "
              "fp16 compute on cuda, fp32 on the cpu).", choices=("fp16", "bf16", "fp32", "int8w")),
    ParamSpec("compile_mode", STRING, "", "torch.compile mode of the VLM forward before its CUDA-graph capture: "
              "'' (off), default, max-autotune-no-cudagraphs. Fuses the small kernels between the GEMMs "
              "and freezes the weights (H200: Kosmos-2 4.5 -> 3.05 ms, Qwen2.5-VL 5 views 23.9 -> 12.9 ms, +0.8 / "
              "+3.9 GB); the first forward per shape compiles (40-70 s there), so features start that much later.",
              choices=("", "default", "max-autotune-no-cudagraphs")),
    ParamSpec("feature_pooling", STRING, "last_token", "How hidden states become one feature vector: "
              "last_token (last text token), mean_text, mean_image (mean of the image tokens).",
              choices=FEATURE_POOLINGS),
    ParamSpec("action_model_dir", STRING, "", "Model directory of the action expert fed by these features: "
              "its model.yaml must name this vlm_backend, feature_pooling and feature dim, else start-up "
              "stops. Empty: models/default of this package; 'none': no check."),
    ParamSpec("image_topics", STRING_ARRAY, [IMAGE_TOPIC], "Camera topics; several = multi-view "
              "(one batched forward, per-view features averaged)."),
    ParamSpec("max_image_age", DOUBLE, 0.5, "Images older than this (s, ROS time) are not used.",
              0.01, 60.0, live=True),
    MAX_INSTRUCTION_LENGTH := ParamSpec("max_instruction_length", INTEGER, 512,
                                        "Longer instructions are rejected (characters).", 1, 65536),
    ParamSpec("simulated_latency", DOUBLE, 0.0, "Extra seconds added to every forward, to emulate a "
              "slower VLM in benchmarks and tests. 0 on a robot.", 0.0, 30.0, live=True),
)

ACTION_NODE_PARAMS: tuple[ParamSpec, ...] = (
    AUTOSTART,
    ParamSpec("action_hz", DOUBLE, 10.0, "Rate of action-expert inferences / published chunks (Hz).",
              1.0, 50.0, live=True),
    ParamSpec("sensor_type", STRING, "imu", "imu: sensor_msgs/Imu; wrench: geometry_msgs/WrenchStamped.",
              choices=SENSOR_TYPES),
    ParamSpec("sensor_hz", DOUBLE, 650.0, "Expected sensor rate (Hz); must match model.yaml.", 1.0, 10000.0),
    ParamSpec("sensor_window", INTEGER, 65, "Sensor samples per inference; must match model.yaml.", 1, 10000),
    ParamSpec("chunk_size", INTEGER, 8, "Actions per chunk; must match model.yaml.", 1, 1000),
    ParamSpec("action_dt", DOUBLE, 0.0125, "Seconds between the actions of a chunk; must match model.yaml.",
              1e-4, 10.0),
    ParamSpec("action_names", STRING_ARRAY, ["linear_x", "angular_z"], "Names of the action dimensions "
              "(JointTrajectory joint_names); must match model.yaml."),
    ParamSpec("backend", STRING, "auto", "Inference backend; auto = tensorrt > onnxruntime > torch by "
              "what is installed and present.", choices=INFERENCE_BACKENDS),
    ParamSpec("model_dir", STRING, "", "Action-expert model directory. Empty: models/default."),
    ParamSpec("engine_cache_dir", STRING, "", "Where TensorRT engines are built and cached. "
              "Empty: ~/.cache/mobile_vla_ros/engines."),
    ParamSpec("max_feature_age", DOUBLE, 2.0, "VL features older than this (s, from their source image "
              "stamp) stop the robot.", 0.01, 120.0, live=True),
    ParamSpec("max_sensor_gap", DOUBLE, 0.05, "A gap between sensor samples, or since the newest one, "
              "longer than this (s) stops the robot.", 0.0005, 10.0, live=True),
    ParamSpec("action_limits", DOUBLE_ARRAY, [0.5, 1.0], "Absolute bound per action dimension, applied "
              "last before publishing.", 0.0, 1e6, live=True),
    ParamSpec("max_action_step", DOUBLE_ARRAY, [0.05, 0.2], "Largest change per executed step and "
              "dimension (chunk executor rate limit).", 0.0, 1e6, live=True),
    ParamSpec("execute_chunks", BOOL, True, "Execute chunks step by step as velocity commands on cmd_vel."),
    ParamSpec("execute_hz", DOUBLE, 80.0, "Rate of cmd_vel while executing chunks (Hz).", 1.0, 1000.0,
              live=True),
    ParamSpec("twist_mapping", STRING_ARRAY, ["linear.x", "angular.z"], "Twist field of each action "
              "dimension ('' = not sent).", choices=TWIST_FIELDS),
    ParamSpec("twist_stamped", BOOL, False, "Publish geometry_msgs/TwistStamped instead of Twist."),
    MAX_INSTRUCTION_LENGTH,
    ParamSpec("zero_cmd_hold", DOUBLE, 1.0, "While stopped, zero cmd_vel is published this long (s), "
              "then nothing.", 0.0, 60.0, live=True),
)


def spec_by_name(specs: tuple[ParamSpec, ...]) -> dict[str, ParamSpec]:
    return {s.name: s for s in specs}


# The synchronous loop (sync_baseline_node, closed-loop sync mode) ticks its VLM at the highest vlm_hz: a
# forward slower than the period starts again as soon as the previous decision is out (back to back).
SYNC_LOOP_VLM_HZ = spec_by_name(VLM_NODE_PARAMS)["vlm_hz"].high
# The same loop given the asynchronous split's VLM compute: its VLM ticks at vlm_hz (a comparison baseline).
SYNC_AT_VLM_HZ = "sync-at-vlm-hz"
# How the simulated robot can be driven: the two nodes, or one of the two synchronous baselines.
SIM_POLICY_MODES = ("async", "sync", SYNC_AT_VLM_HZ)
