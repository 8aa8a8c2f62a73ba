"""Export round trip (PyTorch vs ONNX Runtime), backend selection, and graph / model.yaml mismatches."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from mobile_vla_ros.core.backend_factory import create_backend
from mobile_vla_ros.core.backends import BackendUnavailable, OnnxRuntimeBackend, TorchBackend
from mobile_vla_ros.core.model_spec import ModelSpec, ModelSpecError, check_params
from mobile_vla_ros.core.motion import MOTION_INPUT
from mobile_vla_ros.models.action_expert import ActionExpert, ActionExpertConfig
from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.tools.deploy.export import verify_onnx, write_model_dir

EXPORT = [sys.executable, "-m", "mobile_vla_ros.tools.deploy.export"]


def test_export_cli_round_trip_within_1e4_on_100_inputs(tmp_path):
    out = tmp_path / "wrench_model"
    result = subprocess.run([*EXPORT, "--random-init", "--seed", "3", "--out", str(out), "--sensor-type", "wrench",
                             "--feature-dim", "48", "--action-names", "vx,vy,wz"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    error = float(result.stdout.split("= ")[1].split()[0])
    assert error <= 1e-4
    spec = ModelSpec.load(out)
    assert (spec.feature_dim, spec.sensor_type, spec.action_names) == (48, "wrench", ["vx", "vy", "wz"])
    # Re-export from the written checkpoint gives the same graph numerics.
    again = tmp_path / "again"
    result = subprocess.run([*EXPORT, "--checkpoint", str(out / "action_expert.pt"), "--out", str(again)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    f = np.random.default_rng(0).standard_normal((4, 48)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 65, 6)).astype(np.float32)
    a = OnnxRuntimeBackend(out, spec).run(f, w)
    b = OnnxRuntimeBackend(again, ModelSpec.load(again)).run(f, w)
    assert a.shape == (4, 8, 3) and np.array_equal(a, b)


def test_normalisation_travels_inside_the_graph(tmp_path):
    spec = ModelSpec.load(default_model_dir())
    torch.manual_seed(0)
    model = ActionExpert(ActionExpertConfig.from_spec(spec)).eval()
    spec.normalization.sensor_mean = [0, 0, 0, 0, 0, 9.81]
    spec.normalization.sensor_std = [0.5] * 6
    spec.normalization.action_mean = [0.2, 0.0]
    spec.normalization.action_std = [0.3, 0.8]
    model.set_normalization(spec.normalization)
    assert write_model_dir(model, spec, tmp_path / "m") <= 1e-4
    loaded = ModelSpec.load(tmp_path / "m")
    assert loaded.normalization.sensor_mean[5] == pytest.approx(9.81)
    assert verify_onnx(model, tmp_path / "m", loaded, samples=100) <= 1e-4


def test_torch_and_onnxruntime_backends_agree_and_auto_picks_onnxruntime():
    spec = ModelSpec.load(default_model_dir())
    norm = spec.normalization

    def around(mean, std, shape, seed):  # inputs in the model's range: raw IMU noise of unit variance would be
        noise = np.random.default_rng(seed).standard_normal(shape)  # 200 sigma off, outputs in the hundreds
        return (np.asarray(mean) + np.asarray(std) * noise).astype(np.float32)

    f = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    w = around(norm.sensor_mean, norm.sensor_std, (3, 65, 6), 1)
    m = around(norm.motion_mean, norm.motion_std, (3, 4), 2) if spec.motion_input else None
    ort_out = OnnxRuntimeBackend(default_model_dir(), spec).run(f, w, m)
    torch_out = TorchBackend(default_model_dir(), spec, device="cpu").run(f, w, m)
    assert np.max(np.abs(ort_out - torch_out)) <= 1e-4
    assert create_backend("auto", default_model_dir(), spec).name.startswith("onnxruntime")


@pytest.mark.parametrize("motion_input", [None, MOTION_INPUT])
def test_two_and_three_input_models_export_and_run_on_every_cpu_backend(tmp_path, motion_input):
    spec = ModelSpec.load(default_model_dir())  # the shipped architecture (with its geometry head, for three inputs)
    spec.motion_input = motion_input
    if not motion_input:  # the geometry head moves its estimate by the motion input: a two-input model has none
        spec.architecture.pop("geometry_head", None)
    spec.normalization.motion_mean, spec.normalization.motion_std = ([1.0, 0.2, 0.0, 0.1], [1.0, 0.3, 0.2, 0.5]) \
        if motion_input else ([], [])
    torch.manual_seed(0)
    model = ActionExpert(ActionExpertConfig.from_spec(spec)).eval()
    model.set_normalization(spec.normalization)
    assert write_model_dir(model, spec, tmp_path / "m") <= 1e-4
    loaded = ModelSpec.load(tmp_path / "m")
    assert loaded.motion_input == motion_input and loaded.normalization.motion_std == spec.normalization.motion_std
    rng = np.random.default_rng(0)
    f, w = rng.standard_normal((2, 64)).astype(np.float32), rng.standard_normal((2, 65, 6)).astype(np.float32)
    motion = rng.standard_normal((2, 4)).astype(np.float32) if motion_input else None
    ort = OnnxRuntimeBackend(tmp_path / "m", loaded)
    out = ort.run(f, w, motion)
    assert np.max(np.abs(out - TorchBackend(tmp_path / "m", loaded, device="cpu").run(f, w, motion))) <= 1e-4
    if motion_input:
        other = ort.run(f, w, motion + 1.0)
        assert np.max(np.abs(other - out)) > 1e-3  # the motion reaches the actions
        with pytest.raises(ValueError, match="motion_since_image"):
            ort.run(f, w)


def test_tensorrt_missing_is_a_clear_error(monkeypatch):
    """Whether or not this machine has TensorRT: where it is missing, the error says what to install."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt fails, as without the package
    spec = ModelSpec.load(default_model_dir())
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        create_backend("tensorrt", default_model_dir(), spec)
    with pytest.raises(ValueError, match="not one of auto, tensorrt, onnxruntime, torch"):
        create_backend("tflite", default_model_dir(), spec)


def test_graph_with_wrong_tensor_names_is_refused(tmp_path):
    import onnx

    bad = tmp_path / "bad"
    shutil.copytree(default_model_dir(), bad, ignore=shutil.ignore_patterns("vlm"))
    graph = onnx.load(str(bad / "action_expert.onnx"))
    graph.graph.input[0].name = "features"
    for node in graph.graph.node:
        node.input[:] = ["features" if i == "vl_features" else i for i in node.input]
    onnx.save(graph, str(bad / "action_expert.onnx"))
    with pytest.raises(ModelSpecError, match=r"input names: expected \['motion_since_image', 'sensor_window', "
                                             r"'vl_features'\], got \['features', 'motion_since_image', "
                                             r"'sensor_window'\]"):
        OnnxRuntimeBackend(bad, ModelSpec.load(bad))


def test_model_yaml_errors_name_the_key(tmp_path):
    shutil.copytree(default_model_dir(), tmp_path / "m", ignore=shutil.ignore_patterns("vlm"))
    path = tmp_path / "m" / "model.yaml"
    path.write_text(path.read_text().replace("chunk_size: 8\n", ""))
    with pytest.raises(ModelSpecError, match="missing key 'chunk_size'"):
        ModelSpec.load(tmp_path / "m")
    path.write_text("- not a mapping\n")
    with pytest.raises(ModelSpecError, match="expected a mapping"):
        ModelSpec.load(tmp_path / "m")


def test_param_check_lists_every_mismatch():
    spec = ModelSpec.load(default_model_dir())
    problems = check_params(spec, {"chunk_size": 8, "action_dt": 0.02, "action_limits": [1.0, 1.0, 1.0],
                                   "sensor_type": "wrench"})
    assert "action_dt: expected 0.0125 (model.yaml), got 0.02 (node parameter)" in problems
    assert "sensor_type: expected 'imu' (model.yaml), got 'wrench' (node parameter)" in problems
    assert any("action_limits: expected 2 values" in p for p in problems)
    assert len(problems) == 3


def test_export_cli_bad_checkpoint_is_one_line_error(tmp_path):
    result = subprocess.run([*EXPORT, "--checkpoint", str(tmp_path / "none.pt"), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("no such file") and "Traceback" not in result.stderr
