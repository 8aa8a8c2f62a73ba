"""Executes action chunks step by step: picks the step for the current time from the newest chunk,
then applies the limits last (absolute bound, then per-step change limit).

A chunk stamped t0 holds actions a_0..a_{K-1}; action k is the command for [t0 + k·dt, t0 + (k+1)·dt)
(so `time_from_start` of point k, (k+1)·dt, is when it ends). A newer chunk replaces the current one
at once and its steps that already lie in the past are skipped, never replayed.

A chunk is stamped with its newest sensor sample, so it begins before it exists and ends one action
period later: its successor, stamped the same way, arrives after it ran out, by the sensor sample's
lag plus inference and scheduling (a few ms). A command due in that gap keeps the last action for up
to one step (LATE_SUCCESSOR_STEPS), as a chunk up to one step early gives its first; later than that
the command is zero. Without the grace, the action node braked at nearly every chunk boundary (366
used-up steps in 368 chunks, `mobile-vla-bench loop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LATE_SUCCESSOR_STEPS = 1  # steps past its end a chunk's last action still holds (see the module doc)


@dataclass(frozen=True)
class ActionChunk:
    stamp: float  # stamp of the newest sensor sample the chunk was computed from
    dt: float
    actions: np.ndarray  # float32 [K, D]

    def step_index(self, now: float) -> int:
        """Index of the action active at `now`: >= K when the chunk is used up, -1 more than a step
        before the chunk's stamp (the clock went back): then no action of this chunk applies."""
        k = math.floor((now - self.stamp) / self.dt + 1e-9)
        return -1 if k < -1 else max(0, k)


def clamp_to_limits(actions: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, int]:
    """Clip each dimension to ±limit; returns the clipped copy and how many values were changed."""
    clipped = np.clip(actions, -limits, limits)
    return clipped, int(np.count_nonzero(clipped != actions))


class ChunkExecutor:
    """Turns the newest chunk into one command per call; zero when stopped or out of steps."""

    def __init__(self, action_dim: int, limits, max_step) -> None:
        self.action_dim = action_dim
        self._chunk: ActionChunk | None = None
        self._last = np.zeros(action_dim, dtype=np.float32)
        self.set_limits(limits, max_step)
        self.clamped_values = 0
        self.rate_limited_values = 0
        self.exhausted_steps = 0

    def set_limits(self, limits, max_step) -> None:
        limits = np.asarray(limits, dtype=np.float32)
        max_step = np.asarray(max_step, dtype=np.float32)
        for name, arr in (("action_limits", limits), ("max_action_step", max_step)):
            if arr.shape != (self.action_dim,):
                raise ValueError(f"{name}: expected {self.action_dim} values (one per action), got {arr.size}")
        self._limits, self._max_step = limits, max_step

    @property
    def chunk(self) -> ActionChunk | None:
        return self._chunk

    def set_chunk(self, chunk: ActionChunk) -> None:
        if chunk.actions.ndim != 2 or chunk.actions.shape[1] != self.action_dim:
            raise ValueError(f"chunk actions: expected [K, {self.action_dim}], got {list(chunk.actions.shape)}")
        if self._chunk is None or chunk.stamp >= self._chunk.stamp:
            self._chunk = chunk

    def command(self, now: float) -> np.ndarray:
        target = np.zeros(self.action_dim, dtype=np.float32)
        if self._chunk is not None:
            k = self._chunk.step_index(now)
            last = len(self._chunk.actions) - 1
            if 0 <= k <= last + LATE_SUCCESSOR_STEPS:
                target = self._chunk.actions[min(k, last)]
            else:
                self.exhausted_steps += 1
        target, n = clamp_to_limits(target, self._limits)
        self.clamped_values += n
        change = np.clip(target - self._last, -self._max_step, self._max_step)
        self.rate_limited_values += int(np.count_nonzero(change != target - self._last))
        self._last = (self._last + change).astype(np.float32)
        return self._last.copy()

    def reset_to_zero(self) -> np.ndarray:
        """Immediate zero (safe stop): the rate limit does not delay stopping."""
        self._chunk = None
        self._last = np.zeros(self.action_dim, dtype=np.float32)
        return self._last.copy()
