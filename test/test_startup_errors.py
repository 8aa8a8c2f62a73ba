"""Configuration that cannot work stops a node at start-up with exit code 2 and a message naming
expected vs got (or the missing file, or the valid choices)."""

from __future__ import annotations

import shutil

import pytest
from ros_harness import NodeProcess, wait_for

from mobile_vla_ros.paths import default_model_dir

pytestmark = pytest.mark.system


def fails_with(node: NodeProcess, *fragments: str) -> None:
    code = node.wait(timeout=60)
    out = node.output()
    assert code == 2, f"exit code {code}, output:\n{out}"
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in output:\n{out}"
    assert "Traceback" not in out


@pytest.mark.timeout(90)
def test_action_node_refuses_parameters_that_contradict_model_yaml(processes):
    node = NodeProcess("action_expert_node", {"sensor_window": 64, "action_names": ["vx", "wz"]})
    processes.append(node)
    fails_with(node, "sensor_window: expected 65 (model.yaml), got 64",
               "action_names: expected ['linear_x', 'angular_z'] (model.yaml), got ['vx', 'wz']")


@pytest.mark.timeout(90)
def test_action_node_refuses_missing_model_and_wrong_graph(processes, tmp_path):
    missing = NodeProcess("action_expert_node", {"model_dir": str(tmp_path / "nowhere")})
    processes.append(missing)
    fails_with(missing, "model.yaml: missing")

    # model.yaml claims a 32-dim feature while the graph takes 64: the ONNX check names both.
    bad = tmp_path / "bad_model"
    shutil.copytree(default_model_dir(), bad, ignore=shutil.ignore_patterns("vlm"))
    text = (bad / "model.yaml").read_text().replace("feature_dim: 64", "feature_dim: 32")
    (bad / "model.yaml").write_text(text)
    wrong = NodeProcess("action_expert_node", {"model_dir": str(bad), "backend": "onnxruntime"})
    processes.append(wrong)
    fails_with(wrong, "input 'vl_features': expected shape [B, 32], got [B, 64]")


@pytest.mark.timeout(90)
def test_vlm_node_names_missing_files_and_valid_backends(processes, tmp_path):
    incomplete = tmp_path / "vlm"
    incomplete.mkdir()
    (incomplete / "config.json").write_text("{}")
    # Independent nodes, started together: their start-ups (transformers' import) overlap.
    node = NodeProcess("vlm_node", {"device": "cpu", "dtype": "fp32", "model_path": str(incomplete)})
    unknown = NodeProcess("vlm_node", {"device": "cpu", "dtype": "fp32", "vlm_backend": "llava"})
    processes.extend([node, unknown])
    fails_with(node, "preprocessor_config.json", "model weights", "tokenizer")
    fails_with(unknown, "'llava' is not one of kosmos2, kosmos2_clip, qwen2_5_vl")


@pytest.mark.timeout(60)
def test_out_of_range_yaml_value_stops_start_up(processes):
    node = NodeProcess("action_expert_node", {"action_hz": 500.0})
    processes.append(node)
    fails_with(node, "action_hz")


@pytest.mark.timeout(60)
def test_a_value_of_the_wrong_type_stops_every_node_with_one_line(processes):
    """An integer where a float is declared (`sensor_hz: 650` in a YAML): each node, the test tools
    included, ends with one line naming the parameter and both types, not a traceback."""
    nodes = [NodeProcess("vlm_node", {"vlm_hz": 3}), NodeProcess("tools.bringup.synthetic_sources", {"sensor_hz": 650})]
    processes.extend(nodes)
    for node, name in zip(nodes, ("vlm_hz", "sensor_hz")):
        fails_with(node, name, "INTEGER", "DOUBLE")


@pytest.mark.timeout(120)
def test_vlm_node_refuses_features_the_action_model_was_not_trained_on(processes, tiny_qwen_dir):
    # The shipped action model was trained on kosmos2 / last_token / 64-dim features.
    # Independent nodes, started together: their start-ups (transformers' import) overlap.
    pooling = NodeProcess("vlm_node", {"device": "cpu", "dtype": "fp32", "feature_pooling": "mean_image"})
    qwen = NodeProcess("vlm_node", {"device": "cpu", "dtype": "fp32", "vlm_backend": "qwen2_5_vl",
                                    "model_path": str(tiny_qwen_dir)})
    # With the check switched off the same VLM starts (e.g. to record features for a new model).
    unchecked = NodeProcess("vlm_node", {"device": "cpu", "dtype": "fp32", "vlm_backend": "qwen2_5_vl",
                                         "model_path": str(tiny_qwen_dir), "action_model_dir": "none"})
    processes.extend([pooling, qwen, unchecked])
    fails_with(pooling, "feature_pooling: expected 'last_token' (model.yaml), got 'mean_image'")
    fails_with(qwen, "vlm_backend: expected 'kosmos2' (model.yaml), got 'qwen2_5_vl'")
    wait_for(lambda: "feature dim 64" in unchecked.output() or not unchecked.alive(), 60, "qwen vlm_node start")
    assert unchecked.alive(), unchecked.output()


def test_a_malformed_parameter_file_ends_in_one_line_naming_file_and_line(tmp_path):
    """rcl itself would end in a traceback ('Couldn't parse params file'); the nodes and bring-up name
    the file and the line instead and exit with 2 before starting anything."""
    import subprocess
    import sys

    bad = tmp_path / "robot.yaml"
    bad.write_text("/**/action_expert_node:\n  ros__parameters:\n    action_hz: [10.0\n    backend: auto\n")
    commands = [[sys.executable, "-m", f"mobile_vla_ros.{m}", "--ros-args", "--params-file", str(bad)]
                for m in ("action_expert_node", "vlm_node")]
    commands.append([sys.executable, "-m", "mobile_vla_ros.tools.bringup.cli", "--params-file", str(bad)])
    for command in commands:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=60)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{bad}:4: not valid YAML" in lines[0]
    not_sections = tmp_path / "list.yaml"
    not_sections.write_text("- action_hz: 10.0\n")
    proc = subprocess.run([*commands[0][:-1], str(not_sections)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "expected node sections" in proc.stderr
