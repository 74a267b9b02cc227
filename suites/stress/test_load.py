"""Load: a concurrency ramp, a sustained open-loop rate, overflow and recovery, memory over time.

Every request is accounted for: an image, Overloaded, or InvalidRequest. A TargetError, an untranslated
exception or a request that never answers fails the test. For an in-process target, concurrency means
threads sharing one pipeline; the report says so.
"""
from __future__ import annotations

import pytest

from harness.load import closed_loop, open_loop
from harness.memory import MemorySampler


def note_concurrency(target, recorder):
    if target.capabilities.concurrency == 1 and target.capabilities.max_queue:
        recorder.note(f"{target.name} serves one request at a time and queues {target.capabilities.max_queue}; "
                      "in process, concurrent requests are threads sharing one pipeline")


def assert_accounted(result, allowed=("ok", "overloaded")):
    counts = result.counts()
    assert sum(counts.values()) == len(result.outcomes), "a request went missing"
    bad = {k: n for k, n in counts.items() if n and k not in allowed}
    errors = sorted({o.error for o in result.outcomes if o.kind not in allowed})[:3]
    assert not bad, f"requests ended as {bad}: {errors}"


def test_concurrency_ramp(target, profile, recorder, load_request):
    note_concurrency(target, recorder)
    top, per_level = profile.get("max_concurrency", 4), profile.get("requests_per_level", 8)
    levels = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= top]
    for c in levels:
        result = closed_loop(target.generate, load_request, concurrency=c, count=max(per_level, c))
        assert_accounted(result)
        stats = result.latency()
        assert stats is not None, f"no request answered at concurrency {c}"
        recorder.metrics(f"ramp.c{c}.latency", {"p50": stats.p50, "p95": stats.p95, "p99": stats.p99}, "s")
        recorder.metric(f"ramp.c{c}.throughput", result.throughput, "images/s", better="higher")
        recorder.metric(f"ramp.c{c}.overloaded", result.counts()["overloaded"], "requests")


def test_sustained_open_loop(target, profile, recorder, load_request):
    note_concurrency(target, recorder)
    rate, seconds = profile.get("open_rate", 5.0), profile.get("open_duration", 3.0)
    result = open_loop(target.generate, load_request, rate=rate, duration=seconds,
                       poisson=profile.get("open_poisson", True), timeout=profile.get("load_timeout", 60.0))
    recorder.artifact("open-loop", result.summary())
    recorder.metric("open_loop.late_fraction", result.late_fraction, better="lower")
    assert result.valid, (f"the load generator fell behind ({result.late_fraction:.1%} late sends at {rate}/s): "
                          "these numbers would understate latency, so the run is invalid")
    assert_accounted(result)
    stats = result.latency()
    recorder.metrics("open_loop.latency", {"p50": stats.p50, "p95": stats.p95, "p99": stats.p99}, "s",
                     better="lower")
    recorder.metric("open_loop.throughput", result.throughput, "images/s", better="higher")
    recorder.metric("open_loop.success_rate", result.counts()["ok"] / len(result.outcomes), better="higher")


def test_overflow_is_refused_cleanly_then_served(target, profile, recorder, make_request):
    caps = target.capabilities
    if not caps.max_queue:
        pytest.skip(f"{target.name} declares no admission limit, so there is no overflow to provoke")
    admitted = caps.concurrency + caps.max_queue
    burst = admitted + profile.get("overflow_extra", 6)
    size = profile.get("overflow_size", 128)
    request = make_request("overflow", height=size, width=size, num_inference_steps=profile.get("overflow_steps", 2))
    result = closed_loop(target.generate, lambda i: request, concurrency=burst, count=burst)
    counts = result.counts()
    recorder.metrics("overflow", {"ok": counts["ok"], "overloaded": counts["overloaded"]}, "requests")
    assert_accounted(result)
    assert counts["overloaded"] >= 1, f"{burst} requests at once, {admitted} admitted, none refused"
    assert counts["ok"] >= 1, "nothing was served during the burst"
    after = target.generate(request)
    assert after.images.shape == (1, size, size, 3), "the target did not serve again after the overflow"


def test_memory_is_stable_under_sustained_load(target, profile, recorder, load_request):
    count = profile.get("memory_requests", 30)
    closed_loop(target.generate, load_request, concurrency=1, count=3)  # warm: first calls allocate for good
    with MemorySampler(interval=0.05) as mem:
        result = closed_loop(target.generate, load_request, concurrency=2, count=count)
    assert_accounted(result)
    recorder.metric("memory.host_slope", mem.host_slope() / 2**20, "MiB/s", better="lower")
    recorder.metric("memory.host_peak", mem.peak_host / 2**20, "MiB", better="lower")
    if mem.peak_device is not None:
        recorder.metric("memory.device_slope", mem.device_slope() / 2**20, "MiB/s", better="lower")
        recorder.metric("memory.device_peak", mem.peak_device / 2**20, "MiB", better="lower")
