"""Load generation that does not lie: a closed loop (N requests in flight) and an open loop (requests sent
on a schedule, whatever the responses).

In the open loop each latency is measured from the request's scheduled send time, not from when it was
actually sent: a generator that falls behind would otherwise hide the queueing it caused (coordinated
omission). A send that starts later than its schedule allows is counted late, and a run with more than 1%
late sends is marked invalid, as perf_analyzer and MLPerf's LoadGen do, rather than reporting numbers the
offered load never produced. Those rules are for runs of thousands; in a short one (CI's 15 sends) 1% would be
no late send at all, and a single thread woken late on a busy machine would void it, so one late send is
always allowed: a generator that cannot keep up is late again and again.
"""
from __future__ import annotations

import gc
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from harness.timing import LatencyStats
from harness.types import InvalidRequest, Overloaded, TargetError, Unavailable

KINDS = ("ok", "overloaded", "invalid", "error", "unavailable", "timeout")
MAX_LATE_FRACTION = 0.01


@dataclass
class Outcome:
    """One request's fate. Times are seconds since the run started."""
    scheduled: float
    sent: float = float("nan")
    done: float = float("nan")
    kind: str = "timeout"                   # until it answers
    error: str | None = None

    @property
    def latency(self) -> float:
        return self.done - self.scheduled   # from the schedule: queueing behind a slow target counts

    @property
    def service(self) -> float:
        return self.done - self.sent


def classify(error: BaseException) -> str:
    for kind, cls in (("overloaded", Overloaded), ("invalid", InvalidRequest), ("unavailable", Unavailable),
                      ("error", TargetError)):
        if isinstance(error, cls):
            return kind
    return "error"  # anything untranslated is the target's fault too


@dataclass
class LoadResult:
    mode: str                               # closed | open
    outcomes: list[Outcome]
    duration: float                         # seconds from the first schedule to the last answer
    started: float = 0.0                    # perf_counter() at time 0 of the outcomes' times
    offered_rate: float | None = None       # open loop: requests per second scheduled
    concurrency: int | None = None          # closed loop: requests in flight
    slack: float = 0.0                      # open loop: how late a send may start
    meta: dict = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {k: sum(o.kind == k for o in self.outcomes) for k in KINDS}

    @property
    def late(self) -> int:
        # a send that never started (nan) is late too: it waited for a free sender
        return sum(not o.sent - o.scheduled <= self.slack for o in self.outcomes) if self.mode == "open" else 0

    @property
    def late_fraction(self) -> float:
        return self.late / len(self.outcomes) if self.outcomes else 0.0

    @property
    def valid(self) -> bool:
        return self.late <= max(1, MAX_LATE_FRACTION * len(self.outcomes))

    @property
    def throughput(self) -> float:
        """Answered requests (images) per second."""
        return self.counts()["ok"] / self.duration if self.duration > 0 else 0.0

    def timeline(self) -> dict[str, list]:
        """Each request's scheduled, sent and answered times (s from the start; None: never) and how it ended,
        for the report's latency-over-time chart."""
        def column(values):
            return [None if np.isnan(v) else round(v, 6) for v in values]

        o = self.outcomes
        return {"scheduled": column([x.scheduled for x in o]), "sent": column([x.sent for x in o]),
                "done": column([x.done for x in o]), "kind": [x.kind for x in o], "slack": self.slack}

    def latencies(self) -> list[float]:
        return [o.latency for o in self.outcomes if o.kind == "ok"]

    def answered(self) -> list[float]:
        """perf_counter() times of the answers with images."""
        return [self.started + o.done for o in self.outcomes if o.kind == "ok"]

    def latency(self) -> LatencyStats | None:
        ok = self.latencies()
        return LatencyStats.of(ok) if ok else None

    def summary(self) -> dict:
        stats = self.latency()
        return {"engine": self.meta.get("engine", "fluxgate"), "mode": self.mode, "requests": len(self.outcomes),
                **self.counts(), "late": self.late, "late_fraction": self.late_fraction, "valid": self.valid, "duration": self.duration,
                "throughput": self.throughput, "offered_rate": self.offered_rate, "concurrency": self.concurrency,
                "latency": stats.as_dict() if stats else None,
                **({"locust": self.meta["locust"]} if "locust" in self.meta else {})}  # its own view, rounded


def _call(fn: Callable, request, outcome: Outcome, start: float) -> None:
    outcome.sent = time.perf_counter() - start
    try:
        fn(request)
        outcome.kind = "ok"
    except Exception as e:  # every failure is counted by kind, none is lost
        outcome.kind, outcome.error = classify(e), f"{type(e).__name__}: {e}"
    outcome.done = time.perf_counter() - start


def closed_loop(fn: Callable, make_request: Callable[[int], object], concurrency: int, count: int) -> LoadResult:
    """`count` requests through `concurrency` workers, each sending its next as soon as one answers."""
    outcomes = [Outcome(scheduled=float("nan")) for _ in range(count)]
    next_index = iter(range(count))
    lock = threading.Lock()
    start = time.perf_counter()

    def worker():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            outcomes[i].scheduled = time.perf_counter() - start  # a closed loop sends when it is ready
            _call(fn, make_request(i), outcomes[i], start)

    threads = [threading.Thread(target=worker, name=f"fluxgate-closed-{n}") for n in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return LoadResult("closed", outcomes, time.perf_counter() - start, start, concurrency=concurrency)


def schedule(rate: float, duration: float, poisson: bool = False, seed: int = 0) -> np.ndarray:
    """Send times in seconds: every 1/rate, or exponential gaps of mean 1/rate (a Poisson process)."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate={rate!r}, duration={duration!r}: both must be positive")
    n = int(rate * duration)
    if not poisson:
        return np.arange(n) / rate
    gaps = np.random.default_rng(seed).exponential(1 / rate, size=n)
    return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def default_slack(rate: float) -> float:
    """How late a send may start at RATE: 2 ms, or a tenth of the mean gap, whichever is larger."""
    return max(0.002, 0.1 / rate)


def open_loop(fn: Callable, make_request: Callable[[int], object], rate: float, duration: float,
              poisson: bool = False, seed: int = 0, max_in_flight: int = 64, timeout: float = 60.0,
              slack: float | None = None) -> LoadResult:
    """Send at `rate` per second for `duration` seconds regardless of answers; wait up to `timeout` after.

    A send is late when it starts more than `slack` after its schedule (default: 2 ms or a tenth of the
    mean gap, whichever is larger): the generator, or the `max_in_flight` senders, could not keep up.
    Requests still unanswered after the timeout count as "timeout", so none goes missing.
    """
    times = schedule(rate, duration, poisson, seed)
    slack = default_slack(rate) if slack is None else slack
    outcomes = [Outcome(scheduled=float(t)) for t in times]
    pool = ThreadPoolExecutor(max_workers=max_in_flight, thread_name_prefix="fluxgate-open")
    started = threading.Barrier(max_in_flight)  # every sender started before the clock, not on a send's time:
    for f in [pool.submit(started.wait) for _ in range(max_in_flight)]:  # each waits, so each is a new thread
        f.result()
    # no cyclic garbage collection while sending: a collection stops every thread while it runs (measured: 25 ms,
    # at the same send of every run, in an interpreter without torch; longer where more objects live)
    collecting = gc.isenabled()
    gc.disable()
    start = time.perf_counter()
    futures = []
    try:
        for i, (t, outcome) in enumerate(zip(times, outcomes)):
            delay = t - (time.perf_counter() - start)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_call, fn, make_request(i), outcome, start))
    finally:
        if collecting:
            gc.enable()
    deadline = time.perf_counter() + timeout
    for f in futures:
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            break
        try:
            f.result(timeout=remaining)
        except TimeoutError:
            break
    pool.shutdown(wait=False, cancel_futures=True)
    answered = [o.done for o in outcomes if o.kind != "timeout"]
    return LoadResult("open", outcomes, max(answered, default=time.perf_counter() - start), start, offered_rate=rate,
                      slack=slack, meta={"poisson": poisson, "seed": seed, "max_in_flight": max_in_flight})


class Engine:
    """fluxgate's own load engine: threads in this process calling `generate`. harness/swarm.py's Swarm has the
    same two methods and sends through Locust's workers instead."""

    name = "fluxgate"

    def __init__(self, generate: Callable):
        self.generate = generate

    def describe(self) -> str:
        return "fluxgate: threads in the test process"

    def closed(self, make_request: Callable[[int], object], concurrency: int, count: int) -> LoadResult:
        return closed_loop(self.generate, make_request, concurrency, count)

    def open(self, make_request: Callable[[int], object], rate: float, duration: float, **options) -> LoadResult:
        return open_loop(self.generate, make_request, rate, duration, **options)
