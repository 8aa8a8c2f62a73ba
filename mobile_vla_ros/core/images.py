"""Image decoding without ROS (numpy only): used by the nodes (through ros/conversions.py) and by the
tools that read bags with rosbags, so training and evaluation run where ROS is not installed.

rgb8, bgr8, rgba8, bgra8 and mono8 (row padding allowed); anything else is rejected with a reason,
never guessed."""

from __future__ import annotations

import numpy as np

CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
MAX_IMAGE_PIXELS = 4096 * 4096


class ConversionError(ValueError):
    """A message that cannot be converted; the message says why."""


def check_image(msg) -> int:
    """Validate a sensor_msgs/Image-like object (encoding, height, width, step, data); return its channels."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ConversionError(f"unsupported encoding {msg.encoding!r} (supported: {', '.join(CHANNELS)})")
    h, w, step = msg.height, msg.width, msg.step
    if h == 0 or w == 0 or h * w > MAX_IMAGE_PIXELS:
        raise ConversionError(f"image size {w}x{h} outside 1..{MAX_IMAGE_PIXELS} pixels")
    if step < w * channels:
        raise ConversionError(f"step {step} < width {w} x {channels} bytes")
    if len(msg.data) != step * h:
        raise ConversionError(f"data has {len(msg.data)} bytes, expected step {step} x height {h} = {step * h}")
    return channels


def decode_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image-like -> RGB uint8 [H, W, 3] (a copy)."""
    channels = check_image(msg)
    h, w = msg.height, msg.width
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8).reshape(h, msg.step)
    pixels = rows[:, : w * channels].reshape(h, w, channels)
    if msg.encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if msg.encoding.startswith("bgr"):
        return np.ascontiguousarray(pixels[:, :, 2::-1])
    return np.ascontiguousarray(pixels[:, :, :3])
