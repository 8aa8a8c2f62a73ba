"""Checks every input passes before use; each returns None or a short reason that is counted and logged."""

from __future__ import annotations

MAX_FUTURE = 0.5  # s a stamp may lie ahead of our clock (clock offsets between computers)
# A clock that runs backwards by more than this, or forwards by more than CLOCK_JUMP_FORWARD between
# two readings, has jumped (bag loop, simulator reset, time-source step): everything held is of the old
# timeline. Small backward steps are normal where stamps and /clock travel on different topics.
CLOCK_JUMP_BACKWARD = 0.1
CLOCK_JUMP_FORWARD = 2.0


class ClockWatch:
    """Compares each reading of a clock with the previous one; `check` returns 'backward',
    'forward' or None. Readings of zero (sim time before the first /clock) are not compared."""

    def __init__(self, backward: float = CLOCK_JUMP_BACKWARD, forward: float = CLOCK_JUMP_FORWARD) -> None:
        self.backward, self.forward = backward, forward
        self.last: float | None = None

    def check(self, now: float) -> str | None:
        if now <= 0.0:  # a sim clock before its first /clock: not a time yet
            return None
        last, self.last = self.last, now
        if last is None:
            return None
        if now < last - self.backward:
            return "backward"
        if now > last + self.forward:
            return "forward"
        return None


def check_stamp(stamp: float, now: float, max_future: float = MAX_FUTURE) -> str | None:
    """Zero stamps (unset header) and stamps far in the future are rejected; going backwards is the
    sensor window's and cache's business."""
    if stamp <= 0.0:
        return "zero_stamp"
    if stamp > now + max_future:
        return "future_stamp"
    return None


def check_instruction(text: str, max_length: int) -> str | None:
    if not text:
        return "empty instruction"
    if len(text) > max_length:
        return f"instruction of {len(text)} characters (limit {max_length})"
    return None
