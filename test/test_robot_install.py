"""The robot's pip installs (requirements/robot.txt) resolve to aarch64 / CPython 3.10 wheels, asked of
the package index as a user would; a package without such a wheel is reported, not glossed over."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "check_robot_wheels.py"


def check(requirements: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--requirements", str(requirements), "--out", str(out)],
                          capture_output=True, text=True, timeout=240)


@pytest.mark.timeout(300)
def test_robot_requirements_resolve_for_aarch64_cp310_and_a_missing_wheel_is_reported(tmp_path):
    result = check(REPO / "requirements" / "robot.txt", tmp_path / "wheels.md")
    assert result.returncode == 0, result.stderr
    table = (tmp_path / "wheels.md").read_text()
    for pin in ("onnxruntime | 1.23.2", "cuda-python | 12.6.2.post1", "transformers | 4.57.6"):
        assert pin in table
    assert "onnxruntime-1.23.2-cp310-cp310-manylinux" in table and "aarch64" in table
    gpu = tmp_path / "gpu.txt"
    gpu.write_text("onnxruntime-gpu\n")  # no aarch64 wheel on PyPI: NVIDIA ships Jetson builds elsewhere
    result = check(gpu, tmp_path / "gpu.md")
    assert result.returncode != 0 and "does not resolve for aarch64 / cp310" in result.stderr
