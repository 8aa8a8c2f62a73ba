"""Background execution of slow work (the VLM forward) that never queues more than one job.

A VLM forward can take longer than the VLM period; queueing ticks would only grow latency and
memory, so a tick that finds the previous forward still running is skipped and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def period_from_hz(hz: float) -> float:
    if hz <= 0:
        raise ValueError(f"rate must be > 0 Hz, got {hz}")
    return 1.0 / hz


class SingleFlightWorker:
    """Runs at most one job at a time in a plain worker thread (not an rclpy callback).

    `try_submit` returns False (and counts a skip) while a job is pending or running.
    `on_done(result, error)` is called in the worker thread when the job finishes. When ticks were
    skipped during a job, `on_idle_after_skip` is called once it finishes, so the caller can start
    the next job at once: a source slower than its rate then runs back to back instead of idling
    until the next tick (the feature rate equals the forward rate).
    """

    def __init__(self, name: str = "worker", on_idle_after_skip: Callable[[], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._busy = False
        self._skipped_during_job = False
        self._on_idle_after_skip = on_idle_after_skip
        self.submitted = 0
        self.skipped_busy = 0
        self.failed = 0

    def skip_if_busy(self) -> bool:
        """True (and one skip counted) while a job is pending or running."""
        with self._lock:
            if self._busy:
                self.skipped_busy += 1
                self._skipped_during_job = True
            return self._busy

    def try_submit(self, job: Callable[[], Any], on_done: Callable[[Any, BaseException | None], None]) -> bool:
        with self._lock:
            if self._busy:
                self.skipped_busy += 1
                self._skipped_during_job = True
                return False
            self._busy = True
            self.submitted += 1

        def run() -> None:
            result, error = None, None
            try:
                result = job()
            except Exception as exc:  # reported to on_done; the worker stays usable
                error = exc
                self.failed += 1
            try:
                on_done(result, error)
            finally:
                with self._lock:
                    self._busy = False
                    retry, self._skipped_during_job = self._skipped_during_job, False
                if retry and self._on_idle_after_skip is not None:
                    self._on_idle_after_skip()

        self._pool.submit(run)
        return True

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job is pending or running; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._busy:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        return True

    def shutdown(self, wait: bool = True) -> None:
        """Stop the thread; a job not yet started is cancelled."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
