"""How the soak benchmark times a stop from outside, without ROS: the nodes run on /clock, so a stop is
due when /clock reached the deadline, which is later than the steady clock's estimate when /clock stood
still across it."""

from __future__ import annotations

import numpy as np

from mobile_vla_ros.tools.bench.soak import NODE_CLOCK_LAG, ClockTracker, chunks_off_the_clock

OFFSET = 100.0  # sim - monotonic
PERIOD = 0.004  # s, synthetic_sources' /clock


def readings(tracker: ClockTracker, start: float, end: float, offset: float = OFFSET) -> None:
    for arrival in np.arange(start, end, PERIOD):
        tracker.add(float(arrival), float(arrival) + offset)


def test_a_deadline_is_reached_when_clock_gets_there_also_after_it_stood_still():
    clock = ClockTracker()
    readings(clock, 0.0, 1.0)
    readings(clock, 2.5, 3.0)  # the publisher stalled for 1.5 s, then went on with steady time
    assert clock.changes == [(0.0, OFFSET)]  # a stall is not a jump: the offset is the same after it
    assert abs(clock.reached(OFFSET + 0.5) - 0.5) <= PERIOD  # a running clock: the steady estimate
    assert abs(clock.monotonic_at(OFFSET + 0.5) - 0.5) <= PERIOD
    assert clock.reached(OFFSET + 1.2) == 2.5  # inside the stall: the first reading after it
    assert abs(clock.monotonic_at(OFFSET + 1.2) - 1.2) < 1e-9  # the estimate knows nothing of the stall
    assert clock.reached(OFFSET + 5.0) is None  # not yet


def test_after_a_jump_back_only_the_new_timeline_reaches_a_deadline():
    clock = ClockTracker()
    readings(clock, 0.0, 1.0)
    readings(clock, 1.0, 2.0, offset=OFFSET - 10.0)  # a bag loop 10 s back
    assert len(clock.changes) == 2
    # The old timeline was past OFFSET + 0.5 before the jump; the new one gets there at 10.5 s.
    assert clock.reached(OFFSET + 0.5) is None
    assert abs(clock.reached(OFFSET - 10.0 + 1.5) - 1.5) <= PERIOD


def test_a_chunk_is_judged_against_the_clock_when_it_was_published_not_when_it_arrived():
    clock = ClockTracker()  # readings by publication time
    readings(clock, 0.0, 1.0)
    readings(clock, 1.0, 2.0, offset=OFFSET - 10.0)  # a jump 10 s back at 1.0
    gap = 0.05
    fresh = (1.5, OFFSET - 10.0 + 1.5 - 0.01)  # published at 1.5 with a window 10 ms old
    # The same chunk's arrival may be 0.3 s later on a loaded observer; by publication it is fresh.
    assert chunks_off_the_clock(clock, [fresh], gap) == []
    old = (1.5, OFFSET - 10.0 + 1.5 - gap - NODE_CLOCK_LAG - 0.01)  # a window older than the gap allows
    ahead = (1.5, OFFSET - 10.0 + 1.5 + 0.05)  # a window the clock has not reached
    old_timeline = (1.2, OFFSET + 1.2)  # built on the timeline before the jump
    assert chunks_off_the_clock(clock, [fresh, old, ahead, old_timeline], gap) == [old, ahead, old_timeline]
    before_the_jump = (0.5, OFFSET + 0.5)  # the same stamp was right on the old timeline
    assert chunks_off_the_clock(clock, [before_the_jump], gap) == []
