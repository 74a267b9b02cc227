"""Load: a concurrency ramp, a sustained open-loop rate, overflow and recovery, memory over time, and image
uploads for a target that edits.

Every request is accounted for: an image, Overloaded (429), or InvalidRequest (4xx), and the counts are
recorded. A request that went missing, never answered, found the target unreachable or got a TargetError
(5xx) fails the test. For an in-process target, concurrency means threads sharing one pipeline; the report
says so.
"""
from __future__ import annotations

import pytest

from harness import images
from harness.load import closed_loop, open_loop
from harness.memory import MemorySampler, gpu_index


def note_concurrency(target, recorder):
    if target.capabilities.concurrency == 1 and target.capabilities.max_queue:
        recorder.note(f"{target.name} serves one request at a time and queues {target.capabilities.max_queue}; "
                      "in process, concurrent requests are threads sharing one pipeline")


def assert_accounted(result, recorder=None, name="load", allowed=("ok", "overloaded", "invalid")):
    counts = result.counts()
    if recorder is not None:
        recorder.metrics(f"{name}.answers", counts, "requests")
    assert sum(counts.values()) == len(result.outcomes), "a request went missing"
    bad = {k: n for k, n in counts.items() if n and k not in allowed}
    errors = sorted({o.error or o.kind for o in result.outcomes if o.kind not in allowed})[:3]
    assert not bad, f"requests ended as {bad}: {errors}"


def test_concurrency_ramp(target, profile, recorder, load_request):
    note_concurrency(target, recorder)
    top, per_level = profile.get("max_concurrency"), profile.get("requests_per_level")
    levels = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= top]
    for c in levels:
        result = closed_loop(target.generate, load_request, concurrency=c, count=max(per_level, c))
        assert_accounted(result, recorder, f"ramp.c{c}")
        assert result.latencies(), f"no request answered at concurrency {c}"
        recorder.percentiles(f"ramp.c{c}.latency", result.latencies(), "s", better=None)
        recorder.metric(f"ramp.c{c}.throughput", result.throughput, "images/s", better="higher")


def test_image_uploads_under_load(editor, profile, recorder, make_edit):
    """Edits kept busy at the target's concurrency, each uploading its input (cards of four shapes, each fitted
    to the request): every one answered, none lost, throughput recorded."""
    size = profile.get("load_size")

    def edit(i):
        card = images.card(size + 16 * (i % 4), size)  # four shapes of input, each fitted to the request
        return make_edit(f"edit under load {i}", image=card, height=size, width=size,
                         num_inference_steps=profile.get("load_steps"), seed=i)

    result = closed_loop(editor.generate, edit, concurrency=editor.capabilities.busy,
                         count=profile.get("throughput_requests"))
    assert_accounted(result, recorder, "edit_load")
    recorder.percentiles("edit_load.latency", result.latencies(), "s", better="lower")
    recorder.metric("edit_load.throughput", result.throughput, "images/s", better="higher")


def test_sustained_open_loop(target, profile, recorder, load_request):
    note_concurrency(target, recorder)
    rate, seconds = profile.get("open_rate"), profile.get("open_duration")
    result = open_loop(target.generate, load_request, rate=rate, duration=seconds,
                       poisson=profile.get("open_poisson"), timeout=profile.get("load_timeout"))
    recorder.artifact("open-loop", {**result.summary(), "timeline": result.timeline()})
    recorder.metric("open_loop.late_fraction", result.late_fraction, better="lower")
    assert result.valid, (f"the load generator fell behind ({result.late_fraction:.1%} late sends at {rate}/s): "
                          "these numbers would understate latency, so the run is invalid")
    assert_accounted(result, recorder, "open_loop")
    recorder.percentiles("open_loop.latency", result.latencies(), "s", better="lower")
    recorder.metric("open_loop.throughput", result.throughput, "images/s", better="higher")
    recorder.metric("open_loop.success_rate", result.counts()["ok"] / len(result.outcomes), better="higher")


def test_overflow_is_refused_cleanly_then_served(target, profile, recorder, make_request):
    caps = target.capabilities
    if not caps.max_queue:
        pytest.skip(f"{target.name} declares no admission limit, so there is no overflow to provoke")
    admitted = caps.concurrency + caps.max_queue
    burst = admitted + profile.get("overflow_extra")
    size = profile.get("overflow_size")
    request = make_request("overflow", height=size, width=size, num_inference_steps=profile.get("overflow_steps"))
    result = closed_loop(target.generate, lambda i: request, concurrency=burst, count=burst)
    counts = result.counts()
    assert_accounted(result, recorder, "overflow")
    assert counts["overloaded"] >= 1, f"{burst} requests at once, {admitted} admitted, none refused"
    assert counts["ok"] >= 1, "nothing was served during the burst"
    after = target.generate(request)
    assert after.images.shape == (1, size, size, 3), "the target did not serve again after the overflow"


def test_highest_sustained_rate(target, profile, recorder, load_request):
    """Open-loop steps at rising rates: the highest rate served in full (nothing shed, nothing failed,
    throughput within 10% of the offered rate) and the first rate at which the target sheds load."""
    busy = closed_loop(target.generate, load_request, concurrency=target.capabilities.busy, count=8)
    assert_accounted(busy)
    assert busy.counts()["ok"], "no request was served to start the search from"
    # from half of what it serves kept busy from several threads, as the open loop sends (one request at a time
    # from one thread is faster in process, where threads take turns into torch's thread pool), unless the
    # profile says where
    rate, top = profile.get("capacity_start") or 0.5 * busy.throughput, profile.get("capacity_max")
    start = rate
    seconds, factor = profile.get("capacity_step"), profile.get("capacity_factor")
    sustained, shed, steps = 0.0, None, []
    while rate <= top and shed is None:
        result = open_loop(target.generate, load_request, rate=rate, duration=seconds,
                           timeout=profile.get("load_timeout"))
        steps.append(result.summary())
        if not result.valid:
            recorder.note(f"the load generator could not keep up at {rate:.1f}/s: the search stops there")
            break
        assert_accounted(result)
        counts = result.counts()
        if counts["overloaded"]:
            shed = rate
        elif counts["ok"] == len(result.outcomes) and result.throughput >= 0.9 * rate:
            sustained = rate
        rate *= factor
    recorder.artifact("capacity-steps", steps)
    recorder.metric("capacity.sustained_rate", sustained, "requests/s", better="higher")
    if shed is not None:
        recorder.metric("capacity.shed_rate", shed, "requests/s", better="higher")
    elif target.capabilities.max_queue:
        recorder.note(f"no load was shed up to {steps[-1]['offered_rate']:.1f}/s")
    assert sustained > 0, f"not even {start:.1f}/s was served in full"


def test_memory_is_stable_under_sustained_load(target, profile, recorder, load_request):
    """A leak is memory kept per request: the slope of memory against requests answered, which does not
    change with how fast they are answered (a slope per second would)."""
    if target.capabilities.remote:
        pytest.skip(f"{target.name} is served by another process: its memory is not this one's to watch")
    count = profile.get("memory_requests")
    closed_loop(target.generate, load_request, concurrency=1, count=3)  # warm: first calls allocate for good
    with MemorySampler(interval=0.05, gpu=gpu_index(getattr(target, "device", None))) as mem:
        result = closed_loop(target.generate, load_request, concurrency=2, count=count)
    assert_accounted(result, recorder, "memory")
    answered = result.answered()
    recorder.artifact("memory-samples", {"seconds": [t for t, _, _ in mem.samples],
                                         "host_mib": [h / 2**20 for _, h, _ in mem.samples],
                                         "device_mib": [d / 2**20 if d is not None else None for *_, d in mem.samples],
                                         "answered": sorted(t - mem.started for t in answered)})
    recorder.metric("memory.host_per_request", mem.per_request(answered) / 2**20, "MiB/request", better="lower")
    recorder.metric("memory.host_peak", mem.peak_host / 2**20, "MiB", better="lower")
    if mem.peak_device is not None:
        recorder.metric("memory.device_per_request", mem.per_request(answered, device=True) / 2**20, "MiB/request",
                        better="lower")
        recorder.metric("memory.device_peak", mem.peak_device / 2**20, "MiB", better="lower")
