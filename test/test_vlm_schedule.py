"""Which frames and instruction a VLM forward uses (vlm_node and the closed-loop simulation share it)."""

from __future__ import annotations

import numpy as np

from mobile_vla_ros.core.vlm_schedule import CameraFrame, VlmScheduler

RGB = np.zeros((2, 2, 3), np.uint8)


def frame(stamp: float) -> CameraFrame:
    return CameraFrame(RGB, stamp, "camera")


def test_the_first_usable_frame_after_an_instruction_starts_a_forward_once():
    s = VlmScheduler(max_image_age=0.5)
    assert not s.add_frame("camera", frame(9.0))  # no instruction yet
    assert s.set_instruction("go to the red box", now=10.0)
    assert not s.add_frame("camera", frame(9.9))  # captured before the instruction arrived
    assert s.add_frame("camera", frame(10.05))  # the first one after it: start now, not at the next tick
    inputs, _ = s.select(now=10.06)
    assert inputs is not None and inputs.instruction == "go to the red box" and inputs.newest.stamp == 10.05
    assert not s.add_frame("camera", frame(10.1))  # later frames wait for the ticks
    assert not s.set_instruction("go to the red box", now=11.0)  # the same text is not a new instruction


def test_old_frames_and_frames_from_before_the_instruction_are_not_used():
    s = VlmScheduler(max_image_age=0.5)
    assert s.select(now=1.0) == (None, "no instruction yet")
    s.set_instruction("a", now=10.0)
    assert s.select(now=10.0)[0] is None
    s.add_frame("front", frame(9.8))
    inputs, why = s.select(now=10.1)
    assert inputs is None and "max_image_age" in why
    s.add_frame("front", frame(10.2))
    s.add_frame("rear", frame(10.3))
    assert s.select(now=10.6)[0].frames == [frame(10.2), frame(10.3)]
    assert [f.stamp for f in s.select(now=10.75)[0].frames] == [10.3]  # 10.2 is now older than 0.5 s


def test_a_forward_started_for_an_older_instruction_is_not_current():
    s = VlmScheduler(max_image_age=1.0)
    s.set_instruction("a", now=0.0)
    s.add_frame("camera", frame(0.1))
    inputs, _ = s.select(now=0.2)
    assert s.is_current(inputs)
    s.set_instruction("b", now=0.3)
    assert not s.is_current(inputs)
