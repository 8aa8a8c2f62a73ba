"""Latest vision-language features, the stamp of the image they came from, and their instruction.

The action expert reuses these features for many ticks; the cache answers how old they are and
forgets them when the instruction changes, so features of an old instruction are never used.
All times are seconds on one clock (ROS time in the nodes, bag time in replay).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CachedFeatures:
    features: np.ndarray  # float32 [tokens, dim]
    source_stamp: float  # stamp of the newest image the features were computed from
    instruction: str | None


class FeatureCache:
    """Holds one set of features; `update` refuses features computed before the instruction changed.

    The instruction is identified by the time it arrived: features whose source image is older than
    the current instruction's arrival were necessarily computed for an earlier instruction.
    """

    def __init__(self) -> None:
        self._latest: CachedFeatures | None = None
        self._instruction: str | None = None
        self._instruction_since: float = float("-inf")
        self.updates = 0
        self.rejected_old_instruction = 0

    @property
    def instruction(self) -> str | None:
        return self._instruction

    @property
    def instruction_since(self) -> float:
        return self._instruction_since

    def set_instruction(self, instruction: str, now: float) -> bool:
        """Record a (possibly new) instruction; returns True and drops the features if it changed."""
        if instruction == self._instruction:
            return False
        self._instruction = instruction
        self._instruction_since = now
        self._latest = None
        return True

    def update(self, features: np.ndarray, source_stamp: float) -> bool:
        if source_stamp < self._instruction_since:
            self.rejected_old_instruction += 1
            return False
        self._latest = CachedFeatures(features, source_stamp, self._instruction)
        self.updates += 1
        return True

    def latest(self) -> CachedFeatures | None:
        return self._latest

    def age(self, now: float) -> float | None:
        """Seconds between the source image of the cached features and `now`; None when empty."""
        return None if self._latest is None else now - self._latest.source_stamp

    def restart_timeline(self, now: float) -> None:
        """After a clock jump: drop the features (their stamps are of the old timeline) and date the
        current instruction from `now`, so features computed in the new timeline are accepted."""
        self._latest = None
        if self._instruction is not None:
            self._instruction_since = now
