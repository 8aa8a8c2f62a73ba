"""`mobile-vla-bench doctor` reports what this machine has and what the configured backends need."""

from __future__ import annotations

import importlib.util
import json

import torch

from mobile_vla_ros.core.backends import tensorrt_installed
from mobile_vla_ros.paths import share_dir
from mobile_vla_ros.tools.bench import cli as bench

CONFIG = share_dir() / "config"


def doctor(tmp_path, *files: str) -> tuple[int, dict]:
    out = tmp_path / "doctor.json"
    args = [a for f in files for a in ("--params-file", str(CONFIG / f))]
    code = bench.main(["doctor", *args, "--out", str(out)])
    return code, json.loads(out.read_text())


def test_doctor_reports_this_machine_and_what_the_configuration_needs(tmp_path, capsys):
    code, report = doctor(tmp_path, "robot.yaml", "desktop.yaml")  # ORT/CPU VLM: runs anywhere ROS does
    printed = capsys.readouterr().out
    assert "| Python |" in printed and "| TensorRT |" in printed
    needs = {m["what"]: m for m in report["missing"]}
    if importlib.util.find_spec("rclpy") is None:  # e.g. the GPU machine: the one required item it lacks
        assert code == 1 and report["ros"] is None and needs["ROS 2 (rclpy)"]["required"]
        assert "ros-humble-ros-base" in needs["ROS 2 (rclpy)"]["install"]
    else:
        assert code == 0 and report["ros"] and "ROS 2 (rclpy)" not in needs
    assert report["onnxruntime"] and report["config"]["device"] == "cpu"
    assert report["vlm_fp16_mb"] > 0
    if not tensorrt_installed():  # backend auto: TensorRT is recommended, with its install line, not required
        assert needs["TensorRT (backend: auto)"]["required"] is False
        assert "python3-libnvinfer" in needs["TensorRT (backend: auto)"]["install"]
    code, report = doctor(tmp_path, "robot.yaml")  # the robot's own config: VLM on cuda
    gpu_need = [m for m in report["missing"] if m["what"].startswith("CUDA GPU")]
    if torch.cuda.is_available():
        assert not gpu_need and report["gpu_free_mb"] > 0
    else:
        assert code == 1 and gpu_need and gpu_need[0]["required"]
