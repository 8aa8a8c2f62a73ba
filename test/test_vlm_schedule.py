"""Which frames and instruction a VLM forward uses, and when forwards run in virtual time (vlm_node,
offline replay and the closed-loop simulation share it)."""

from __future__ import annotations

import numpy as np
import pytest

from mobile_vla_ros.core.vlm_schedule import CameraFrame, VirtualTimeVlm, VlmScheduler

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
    s.set_instruction("a", now=0.4)  # back to the old text: still a later instruction than the forward's
    assert not s.is_current(inputs)


class CountingExtractor:
    """The real work is irrelevant here; what matters is which inputs each forward got."""

    def __init__(self):
        self.calls = []

    def __call__(self, images, instruction):
        self.calls.append((len(images), instruction))
        return np.full((1, 4), len(self.calls), np.float32)


def test_virtual_time_vlm_skips_busy_ticks_and_catches_up_when_the_forward_ends():
    """Period 0.3 s, forward 0.5 s: each forward starts when the previous ends (catch-up), so they
    come every 0.5 s -- without the catch-up they would wait for the next tick, every 0.6 s."""
    extract = CountingExtractor()
    vlm = VirtualTimeVlm(VlmScheduler(max_image_age=10.0), extract, latency=0.5)
    vlm.schedule.set_instruction("go", now=0.0)
    vlm.schedule.add_frame("camera", frame(0.0))
    starts = []
    for k in range(11):  # ticks at 0, 0.3, ..., 3.0
        t = round(0.3 * k, 6)
        while vlm.next_ready is not None and vlm.next_ready <= t:
            vlm.finish()
            if vlm.pending is not None:
                starts.append(vlm.pending[0] - 0.5)
        before = vlm.pending
        vlm.tick(t)
        if vlm.pending is not before and vlm.pending is not None:
            starts.append(t)
    assert starts == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0])
    assert vlm.counts["forwards"] == 7 and vlm.counts["skipped_busy"] == 10  # every tick after the first


def test_virtual_time_vlm_uses_the_node_rules_for_frames_and_instructions():
    extract = CountingExtractor()
    vlm = VirtualTimeVlm(VlmScheduler(max_image_age=0.5), extract, latency=1.0)
    vlm.schedule.set_instruction("a", now=0.0)
    vlm.add_frame("camera", frame(0.1), now=0.1)  # first usable frame after the instruction: starts now
    assert vlm.next_ready == pytest.approx(1.1) and extract.calls == [(1, "a")]
    vlm.schedule.set_instruction("b", now=0.3)
    vlm.schedule.set_instruction("a", now=0.6)  # same text as the forward's, but a newer instruction
    done = vlm.finish()
    assert not done.current and done.inputs.instruction == "a"
    vlm.tick(1.2)  # the newest frame (0.1) is 1.1 s old: older than max_image_age, no forward
    assert vlm.pending is None and vlm.counts["skipped_no_input"] == 1
