"""Checks every input passes before use; each returns None or a short reason that is counted and logged."""

from __future__ import annotations

MAX_FUTURE = 0.5  # s a stamp may lie ahead of our clock (clock offsets between computers)


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
