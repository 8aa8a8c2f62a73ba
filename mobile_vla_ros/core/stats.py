"""Small run-time statistics for diagnostics: event rates and latency percentiles (monotonic time)."""

from __future__ import annotations

import collections
import time

import numpy as np


class RateMeter:
    """Events per second over a sliding window of `horizon` seconds."""

    def __init__(self, horizon: float = 5.0, clock=time.monotonic) -> None:
        self.horizon = horizon
        self._clock = clock
        self._events: collections.deque[float] = collections.deque()
        self.total = 0

    def tick(self) -> None:
        self._events.append(self._clock())
        self.total += 1

    def rate(self) -> float:
        now = self._clock()
        while self._events and now - self._events[0] > self.horizon:
            self._events.popleft()
        if len(self._events) < 2:
            return 0.0
        return (len(self._events) - 1) / max(self._events[-1] - self._events[0], 1e-9)


class LatencyStats:
    """Keeps the last `size` durations (seconds) and reports percentiles in milliseconds."""

    def __init__(self, size: int = 1000) -> None:
        self._values: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._values.append(seconds)

    def __len__(self) -> int:
        return len(self._values)

    def percentile_ms(self, q: float) -> float:
        if not self._values:
            return float("nan")
        return float(np.percentile(np.fromiter(self._values, dtype=np.float64), q) * 1e3)
