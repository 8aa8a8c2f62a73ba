"""TensorRT engine cache keys and sidecars (pure Python), the builder CLI without TensorRT, and
INT8 calibration data read from a real rosbag2 bag."""

import json
import subprocess
import sys

import numpy as np
import pytest
from bag_fixtures import write_imu_bag

from mobile_vla_ros.core.engine_cache import EngineKey, find_engine, write_sidecar
from mobile_vla_ros.core.model_spec import INPUT_FEATURES, INPUT_SENSOR, ModelSpec, ModelSpecError
from mobile_vla_ros.core.motion import MotionHistory, extend_from_streams
from mobile_vla_ros.paths import default_model_dir
from mobile_vla_ros.tools.deploy.recorded_inputs import recorded_inputs

KEY = EngineKey("ab" * 32, "Orin (nvgpu)", "8.7", "10.3.0", "fp16")


def test_key_names_gpu_capability_version_precision_and_graph(tmp_path):
    assert KEY.stem == "action_expert_abababababababab_orin-nvgpu_sm87_trt10.3.0_fp16"
    assert KEY.engine_path(tmp_path).name.endswith(".engine")
    with pytest.raises(ValueError, match="precision: expected one of fp32, fp16, int8"):
        EngineKey("ab", "gpu", "8.7", "10", "bf8")


def test_find_engine_checks_the_sidecar(tmp_path):
    assert find_engine(KEY, tmp_path)[0] is None and "not built yet" in find_engine(KEY, tmp_path)[1][0]
    KEY.engine_path(tmp_path).write_bytes(b"plan")
    assert "unknown origin" in find_engine(KEY, tmp_path)[1][0]
    write_sidecar(KEY, tmp_path, build_seconds=12.3)
    assert find_engine(KEY, tmp_path) == (KEY.engine_path(tmp_path), [])
    record = json.loads(KEY.sidecar_path(tmp_path).read_text())
    record["tensorrt_version"] = "10.0.1"  # same file name, built by another TensorRT
    KEY.sidecar_path(tmp_path).write_text(json.dumps(record))
    path, problems = find_engine(KEY, tmp_path)
    assert path is None and problems == ["tensorrt_version: expected '10.3.0', got '10.0.1'"]


# The build CLI as on a machine without TensorRT, whatever this one has: `import tensorrt` fails.
WITHOUT_TENSORRT = ("import runpy, sys; sys.modules['tensorrt'] = None; sys.argv[0] = 'build_engine'; "
                    "runpy.run_module('mobile_vla_ros.tools.deploy.build_engine', run_name='__main__')")


def test_build_engine_cli_without_tensorrt_is_a_clear_error(tmp_path):
    result = subprocess.run([sys.executable, "-c", WITHOUT_TENSORRT, "--model-dir",
                             str(default_model_dir()), "--engine-cache-dir", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "TensorRT is not installed" in result.stderr and "Traceback" not in result.stderr
    result = subprocess.run([sys.executable, "-m", "mobile_vla_ros.tools.deploy.build_engine", "--model-dir",
                             str(tmp_path), "--int8"], capture_output=True, text=True)
    assert result.returncode == 1 and "model.yaml: missing" in result.stderr


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_int8_calibration_windows_come_from_a_bag(tmp_path, storage):
    bag = write_imu_bag(tmp_path / f"bag_{storage}", storage, samples=200, feature_value=0.25)
    data = recorded_inputs(bag, ModelSpec.load(default_model_dir()), "/sensor", "/vl_features")
    assert data[INPUT_SENSOR].shape == (3, 65, 6)  # 200 samples -> 3 full windows
    assert np.allclose(data[INPUT_SENSOR][1, :, 2], 0.1 * np.arange(65, 130), atol=1e-5)
    assert np.allclose(data[INPUT_SENSOR][:, :, 5], 9.81)
    assert data[INPUT_FEATURES].shape == (3, 64) and np.allclose(data[INPUT_FEATURES], 0.25)


def test_int8_calibration_motion_is_the_nodes_motion_since_the_features_image(tmp_path):
    """The shipped model's third input in the calibration data: the motion since the features' image as
    the node's core and training integrate it (gyro z here: 0.1 * index rad/s, no commands)."""
    spec = ModelSpec.load(default_model_dir())
    bag = write_imu_bag(tmp_path / "bag", "mcap", samples=200, feature_value=0.25)
    motion = recorded_inputs(bag, spec, "/sensor", "/vl_features")[spec.motion_input]
    stamps = (1_000_000 + np.arange(200) * 1_538_461) * 1e-9
    samples = np.zeros((200, 6))
    samples[:, 2], samples[:, 5] = 0.1 * np.arange(200), 9.81
    history = extend_from_streams(MotionHistory(30.0, spec.sensor_hz), spec.sensor_type, stamps, samples,
                                  np.zeros(1), np.zeros((1, 2)))
    window_ends = stamps[[64, 129, 194]]
    expected = history.motion_since(np.zeros(3), window_ends)  # the feature image is stamped 0
    np.testing.assert_allclose(motion, expected, atol=1e-5)
    assert motion[2, 3] > 1.0  # the base turned: a comparison of zeros would prove nothing


def test_missing_topic_in_bag_is_named(tmp_path):
    bag = write_imu_bag(tmp_path / "bag", "sqlite3", samples=10, feature_value=0.0)
    with pytest.raises(ModelSpecError, match=r"no topic /imu \(topics: \['/sensor', '/vl_features'\]\)"):
        recorded_inputs(bag, ModelSpec.load(default_model_dir()), "/imu", "/vl_features")


def test_export_verifies_on_recorded_inputs_too(tmp_path):
    bag = write_imu_bag(tmp_path / "bag", "mcap", samples=650, feature_value=0.5)
    result = subprocess.run([sys.executable, "-m", "mobile_vla_ros.tools.deploy.export", "--random-init", "--out",
                             str(tmp_path / "m"), "--verify-bag", str(bag)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "over 100 random inputs + 10 recorded ones" in result.stdout
