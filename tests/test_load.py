"""The load engine: schedules, accounting, and the late-send rule that keeps an open loop honest."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from harness.load import LoadResult, Outcome, closed_loop, open_loop, schedule
from harness.types import InvalidRequest, Overloaded


def test_schedules():
    assert np.allclose(schedule(10, 1), np.arange(10) / 10)
    poisson = schedule(200, 50, poisson=True, seed=1)
    assert len(poisson) == 10_000 and np.allclose(poisson, schedule(200, 50, poisson=True, seed=1))
    assert np.mean(np.diff(poisson)) == pytest.approx(1 / 200, rel=0.05) and (np.diff(poisson) >= 0).all()
    with pytest.raises(ValueError, match="rate=0"):
        schedule(0, 1)


def test_open_loop_keeps_its_schedule_against_a_fast_target():
    # to 5 ms: a shared two-core machine wakes a sleeping thread a few ms late now and then (measured: 2-8 ms,
    # 1 to 3 sends in 200), which the default slack at this rate, 2 ms, counts
    result = open_loop(lambda r: None, lambda i: i, rate=200, duration=1.0, slack=0.005)
    assert result.counts()["ok"] == 200 and result.valid and result.late_fraction <= 0.01
    assert result.throughput == pytest.approx(200, rel=0.1)


def test_one_late_send_is_allowed_in_a_short_run_two_are_not():
    def run(late: int, n: int = 15) -> LoadResult:
        sends = [Outcome(scheduled=i * 0.2, sent=i * 0.2 + (0.1 if i < late else 0.001), done=i * 0.2 + 0.15,
                         kind="ok") for i in range(n)]
        return LoadResult("open", sends, 3.0, offered_rate=5.0, slack=0.02)

    assert run(0).valid and run(1).valid and run(1).late == 1
    assert not run(2).valid                  # a generator that cannot keep up is late again
    assert run(2, n=200).valid and not run(3, n=200).valid   # and past 100 sends, 1% is the rule


def test_a_generator_that_falls_behind_is_invalid_and_latency_counts_the_wait():
    # one sender and a 20 ms service at 100/s: sends pile up behind each other
    result = open_loop(lambda r: time.sleep(0.02), lambda i: i, rate=100, duration=0.5, max_in_flight=1)
    assert not result.valid and result.late_fraction > 0.5
    stats = result.latency()
    service = np.median([o.service for o in result.outcomes if o.kind == "ok"])
    assert stats.p99 > 5 * service  # measured from the schedule, the queueing shows


def test_every_request_is_accounted_for():
    def flaky(i):
        if i % 5 == 1:
            raise Overloaded("full")
        if i % 5 == 2:
            raise InvalidRequest("height=1: bad")
        if i % 5 == 3:
            raise RuntimeError("boom")
        if i % 5 == 4:
            time.sleep(1.0)

    result = open_loop(flaky, lambda i: i, rate=50, duration=0.2, timeout=0.3)
    counts = result.counts()
    assert sum(counts.values()) == len(result.outcomes) == 10
    assert counts == {"ok": 2, "overloaded": 2, "invalid": 2, "error": 2, "unavailable": 0, "timeout": 2}
    assert "RuntimeError: boom" in {o.error for o in result.outcomes}


def test_closed_loop_holds_n_in_flight():
    in_flight, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.01)
        with lock:
            in_flight[0] -= 1

    result = closed_loop(work, lambda i: i, concurrency=4, count=40)
    assert result.counts()["ok"] == 40 and peak[0] == 4 and result.valid
