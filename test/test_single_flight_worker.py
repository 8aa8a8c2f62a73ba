"""The VLM worker never queues: a submit while a job runs is skipped and counted."""

import threading
import time

import pytest

from mobile_vla_ros.core.scheduling import SilenceWatch, SingleFlightWorker, period_from_hz


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


def test_a_silent_subscription_is_recreated_after_the_wait_then_ever_less_often_until_a_message():
    watch = SilenceWatch(wait=3.0, max_wait=10.0, now=100.0)
    assert not watch.recreate_due(102.9)  # silent since the start, not yet long enough
    assert watch.recreate_due(103.0) and watch.recreations == 1
    assert not watch.recreate_due(105.9)  # the wait runs from the re-creation and has doubled
    assert watch.recreate_due(109.0) and watch.wait == 10.0  # 6 s, then 12 s capped at max_wait
    assert not watch.recreate_due(118.9) and watch.recreate_due(119.0)
    assert watch.silent_for(119.0) == 19.0  # since the start: no message yet
    watch.message(120.0)  # messages again: back to the first wait, counted from the message
    assert watch.silent_for(121.5) == 1.5 and not watch.recreate_due(122.9)
    assert watch.recreate_due(123.0) and watch.recreations == 4
    with pytest.raises(ValueError, match="wait"):
        SilenceWatch(wait=5.0, max_wait=1.0, now=0.0)
