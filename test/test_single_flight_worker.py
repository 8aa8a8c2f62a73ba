"""The VLM worker never queues: a submit while a job runs is skipped and counted."""

import threading
import time

import pytest

from mobile_vla_ros.core.scheduling import SingleFlightWorker, period_from_hz


def test_submissions_while_busy_are_skipped_not_queued():
    worker = SingleFlightWorker()
    release = threading.Event()
    results = []
    assert worker.try_submit(lambda: (release.wait(5), "first")[1], lambda r, e: results.append(r))
    for _ in range(5):
        assert not worker.try_submit(lambda: "queued?", lambda r, e: results.append(r))
    assert worker.skip_if_busy()
    release.set()
    assert worker.wait_idle(5)
    assert results == ["first"]
    assert worker.skipped_busy == 6 and worker.submitted == 1
    assert worker.try_submit(lambda: "second", lambda r, e: results.append(r))
    assert worker.wait_idle(5)
    worker.shutdown()
    assert results == ["first", "second"]


def test_skipped_ticks_ask_for_a_catch_up_once_the_job_ends():
    calls = []
    worker = SingleFlightWorker(on_idle_after_skip=lambda: calls.append("retick"))
    release = threading.Event()
    worker.try_submit(lambda: release.wait(5), lambda r, e: None)
    assert worker.skip_if_busy() and worker.skip_if_busy()
    release.set()
    assert worker.wait_idle(5)
    deadline = time.monotonic() + 5  # the callback runs right after the job is marked idle
    while not calls and time.monotonic() < deadline:
        time.sleep(0.001)
    assert calls == ["retick"]  # once, however many ticks were skipped
    worker.try_submit(lambda: None, lambda r, e: None)  # no skip during this job: no catch-up
    assert worker.wait_idle(5)
    worker.shutdown()
    assert calls == ["retick"]


def test_a_failing_job_is_reported_and_the_worker_stays_usable():
    worker = SingleFlightWorker()
    outcomes = []
    assert worker.try_submit(lambda: 1 / 0, lambda r, e: outcomes.append((r, e)))
    assert worker.wait_idle(5)
    assert worker.try_submit(lambda: 6 * 7, lambda r, e: outcomes.append((r, e)))  # the next job runs
    assert worker.wait_idle(5)
    worker.shutdown()
    assert isinstance(outcomes[0][1], ZeroDivisionError) and outcomes[1] == (42, None) and worker.failed == 1


def test_period_from_hz_rejects_non_positive_rates():
    assert period_from_hz(4.0) == 0.25
    for hz in (0.0, -1.0):
        with pytest.raises(ValueError, match="> 0 Hz"):
            period_from_hz(hz)
