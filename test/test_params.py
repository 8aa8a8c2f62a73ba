"""Parameter specs: validation reasons, and config/robot.yaml covering every parameter with valid values."""

from __future__ import annotations

import array

import yaml

from mobile_vla_ros.core import params as P
from mobile_vla_ros.paths import share_dir


def spec(name: str) -> P.ParamSpec:
    return {**P.spec_by_name(P.VLM_NODE_PARAMS), **P.spec_by_name(P.ACTION_NODE_PARAMS)}[name]


def test_defaults_are_valid():
    for s in P.VLM_NODE_PARAMS + P.ACTION_NODE_PARAMS:
        assert P.validate(s, s.default) is None, s.name


def test_ranges_types_and_choices_give_reasons():
    assert "outside the allowed range [1.0, 50.0]" in P.validate(spec("action_hz"), 500.0)
    assert P.validate(spec("action_hz"), 50.0) is None
    assert "expected a number" in P.validate(spec("vlm_hz"), "fast")
    assert "expected a number" in P.validate(spec("vlm_hz"), True)
    assert "not finite" in P.validate(spec("max_feature_age"), float("nan"))
    assert "expected an integer" in P.validate(spec("sensor_window"), 6.5)
    assert "'llava' is not one of kosmos2" in P.validate(spec("vlm_backend"), "llava")
    assert "'linear.q'" in P.validate(spec("twist_mapping"), ["linear.x", "linear.q"])
    assert P.validate(spec("action_limits"), array.array("d", [0.1, 0.2])) is None  # rclpy's array type
    assert "outside" in P.validate(spec("action_limits"), [0.1, -1.0])


def test_robot_yaml_sets_every_parameter_with_a_valid_value():
    config = yaml.safe_load((share_dir() / "config" / "robot.yaml").read_text())
    for node, specs in (("/**/vlm_node", P.VLM_NODE_PARAMS), ("/**/action_expert_node", P.ACTION_NODE_PARAMS)):
        values = config[node]["ros__parameters"]
        assert set(values) == {s.name for s in specs}, node
        for s in specs:
            assert P.validate(s, values[s.name]) is None, (s.name, values[s.name])
