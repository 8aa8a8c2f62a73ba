"""Wall-clock timing of a callable for the benchmarks: percentiles over repeated calls."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(fn: Callable[[], object], iters: int, warmup: int, max_seconds: float) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    deadline = time.monotonic() + max_seconds
    while len(times) < iters and (len(times) < 20 or time.monotonic() < deadline):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    ms = np.asarray(times) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean()), "iters": len(ms)}
