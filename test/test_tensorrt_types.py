"""TensorRT cannot run here, so its API use is checked statically: mypy against the type stubs of
TensorRT 10.13 (tensorrt-stubs), and a stub-only `tensorrt` package is not taken for TensorRT."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mobile_vla_ros.core.backend_factory import create_backend
from mobile_vla_ros.core.backends import tensorrt_installed
from mobile_vla_ros.core.model_spec import ModelSpec
from mobile_vla_ros.paths import default_model_dir

REPO = Path(__file__).resolve().parents[1]
STUBS = importlib.util.find_spec("tensorrt_stubs")
pytestmark = pytest.mark.skipif(STUBS is None, reason="tensorrt-stubs not installed (scripts/install.sh installs it)")


def stub_dir(tmp_path: Path) -> Path:
    """The stubs as mypy can read them. The wheel ships them without py.typed (so mypy skips them in
    site-packages) and with five syntax errors (a parameter named `in`, a non-default after defaults)."""
    site = Path(STUBS.origin).parents[1]
    out = tmp_path / "stubs"
    for package in ("tensorrt", "tensorrt_bindings"):
        shutil.copytree(site / package, out / package)
    pyi = out / "tensorrt_bindings" / "tensorrt.pyi"
    text = re.sub(r"(\(self(?:: \w+)?, )in: ", r"\1in_: ", pyi.read_text())
    pyi.write_text(re.sub(r", channel_axis: int\)", ", channel_axis: int = ...)", text))
    return out


def mypy(stubs: Path, *files: str) -> list[str]:
    result = subprocess.run([sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
                             "--check-untyped-defs", "--cache-dir=/dev/null", *files], cwd=REPO, capture_output=True,
                            text=True, env={"MYPYPATH": str(stubs), "PATH": "/usr/bin:/bin"}, timeout=240)
    return [line for line in result.stdout.splitlines() if not line.startswith(str(stubs))]


def test_the_tensorrt_backend_and_builder_type_check_against_tensorrt_10_13(tmp_path):
    stubs = stub_dir(tmp_path)
    # The check has teeth: TensorRT 8's execute_async_v2 with bindings, gone in TensorRT 10, is reported.
    probe = tmp_path / "probe.py"
    probe.write_text("import tensorrt as trt\n"
                     "engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(b'')\n"
                     "engine.create_execution_context().execute_async_v2(bindings=[0], stream_handle=0)\n")
    checked = ("mobile_vla_ros/core/tensorrt_backend.py", "mobile_vla_ros/core/cuda_binding.py",
               "mobile_vla_ros/tools/deploy/build_engine.py")
    report = mypy(stubs, str(probe), *checked)  # one run (about 20 s): mypy reads torch's and numpy's stubs once
    assert any(line.startswith(str(probe)) and 'has no attribute "execute_async_v2"' in line for line in report)
    errors = [line for line in report if line.startswith("mobile_vla_ros/")]
    assert errors == [], "\n".join(errors)


def test_stub_only_tensorrt_is_not_taken_for_the_runtime():
    """tensorrt-stubs installs a `tensorrt` directory that imports (a namespace package) but has no
    runtime: auto must fall through to ONNX Runtime instead of failing inside TensorRT calls."""
    assert importlib.util.find_spec("tensorrt") is not None and not tensorrt_installed()
    spec = ModelSpec.load(default_model_dir())
    assert create_backend("auto", default_model_dir(), spec).name.startswith("onnxruntime")
