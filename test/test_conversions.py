"""Message <-> numpy conversions: the five image encodings, padding, rejections, features, chunks."""

import numpy as np
import pytest
from sensor_msgs.msg import Image

from mobile_vla_ros.core.chunk_executor import ActionChunk
from mobile_vla_ros.ros.conversions import (
    ConversionError,
    action_to_twist,
    chunk_to_trajectory,
    features_to_image,
    image_to_features,
    image_to_rgb,
    rgb_to_image,
    sec_to_stamp,
    stamp_to_sec,
    trajectory_to_actions,
)

RGB = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)


def encoded(encoding: str, pad: int = 0) -> Image:
    pixels = {"rgb8": RGB, "bgr8": RGB[:, :, ::-1], "rgba8": np.dstack([RGB, np.full((5, 7), 9, np.uint8)]),
              "bgra8": np.dstack([RGB[:, :, ::-1], np.full((5, 7), 9, np.uint8)]), "mono8": RGB[:, :, :1]}[encoding]
    rows = pixels.reshape(5, -1)
    rows = np.hstack([rows, np.zeros((5, pad), np.uint8)])
    return Image(height=5, width=7, encoding=encoding, step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("pad", [0, 3])
def test_colour_encodings_convert_to_rgb(encoding, pad):
    assert np.array_equal(image_to_rgb(encoded(encoding, pad)), RGB)


def test_mono8_is_replicated_to_three_channels():
    out = image_to_rgb(encoded("mono8"))
    assert out.shape == (5, 7, 3) and np.array_equal(out[:, :, 2], RGB[:, :, 0])


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding 'yuv422'"),
    (lambda m: setattr(m, "data", m.data[:-1]), "expected step 21 x height 5"),
    (lambda m: setattr(m, "step", 10), "step 10 < width 7"),
    (lambda m: setattr(m, "height", 0), "outside"),
    (lambda m: (setattr(m, "width", 5000), setattr(m, "height", 5000)), "outside"),
])
def test_malformed_images_are_rejected_with_a_reason(mutate, reason):
    msg = encoded("rgb8")
    mutate(msg)
    with pytest.raises(ConversionError, match=reason):
        image_to_rgb(msg)


def test_features_round_trip_as_little_endian_32fc1():
    feats = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    msg = features_to_image(feats, sec_to_stamp(12.5), "camera_link")
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("32FC1", 1, 64, 256, 0)
    assert np.array_equal(image_to_features(msg), feats)
    assert stamp_to_sec(msg.header.stamp) == 12.5
    msg.data = msg.data[:-4]
    with pytest.raises(ConversionError):
        image_to_features(msg)


def test_chunk_to_trajectory_and_twist_mapping():
    actions = np.arange(16, dtype=np.float32).reshape(8, 2)
    msg = chunk_to_trajectory(ActionChunk(100.25, 0.0125, actions), ["linear_x", "angular_z"])
    assert stamp_to_sec(msg.header.stamp) == 100.25
    assert np.array_equal(trajectory_to_actions(msg), actions)
    assert msg.points[7].time_from_start.nanosec == 100_000_000
    twist = action_to_twist(np.array([0.3, -0.5]), ["linear.x", "angular.z"])
    assert (twist.linear.x, twist.angular.z, twist.linear.y) == (0.3, -0.5, 0.0)
    assert action_to_twist(np.array([0.3, -0.5]), ["", "angular.z"]).linear.x == 0.0


def test_rgb_to_image_round_trip():
    assert np.array_equal(image_to_rgb(rgb_to_image(RGB, sec_to_stamp(1.0), "cam")), RGB)


def test_sample_to_imu_is_the_inverse_of_imu_sample_and_marks_orientation_unknown():
    from mobile_vla_ros.core.sensor_window import imu_sample
    from mobile_vla_ros.ros.conversions import sample_to_imu, sec_to_stamp

    sample = [0.1, -0.2, 0.3, 1.5, -2.5, 9.81]
    msg = sample_to_imu(sample, sec_to_stamp(12.5), "imu")
    assert list(imu_sample(msg)) == pytest.approx(sample)
    assert msg.orientation_covariance[0] == -1.0 and msg.header.frame_id == "imu"
    assert msg.header.stamp.sec == 12 and msg.header.stamp.nanosec == 500_000_000


@pytest.mark.parametrize("sensor_type", ["imu", "wrench"])
def test_a_sample_published_as_its_sensor_message_reads_back_the_same(sensor_type):
    from mobile_vla_ros.ros.conversions import SENSOR_MESSAGES, sample_to_message

    sample = np.array([0.5, -1.25, 2.0, 9.75, -0.125, 3.5], np.float32)
    msg = sample_to_message(sensor_type, sample, sec_to_stamp(3.25), "imu_link")
    message_type, to_sample = SENSOR_MESSAGES[sensor_type]
    assert isinstance(msg, message_type) and msg.header.frame_id == "imu_link"
    np.testing.assert_array_equal(to_sample(msg), sample)
