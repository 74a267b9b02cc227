"""Load: a concurrency ramp, a sustained open-loop rate, overflow and recovery, the highest rates served (in
full, and with p99 under the profile's bound), memory over time, and image uploads for a target that edits.

The load goes through the `load` fixture: fluxgate's threads, or Locust's workers (--load-engine locust), with
the same rules and the same metrics.

Every request is accounted for: an image, Overloaded (429), or InvalidRequest (4xx), and the counts are
recorded. A request that went missing, never answered, found the target unreachable or got a TargetError
(5xx) fails the test. For an in-process target, concurrency means threads sharing one pipeline; the report
says so.
"""
from __future__ import annotations

import pytest

from harness import images
from harness.load import Engine, closed_loop
from harness.memory import MemorySampler, gpu_index
from harness.stats import quantile


def note_load(target, load, recorder):
    recorder.note(f"load sent by {load.describe()}")
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


def test_concurrency_ramp(target, load, profile, recorder, load_request):
    note_load(target, load, recorder)
    top, per_level = profile.get("max_concurrency"), profile.get("requests_per_level")
    levels = [c for c in (1, 2, 4, 8, 16, 32, 64, 128) if c <= top]
    for c in levels:
        result = load.closed(load_request, concurrency=c, count=max(per_level, c))
        assert_accounted(result, recorder, f"ramp.c{c}")
        assert result.latencies(), f"no request answered at concurrency {c}"
        recorder.percentiles(f"ramp.c{c}.latency", result.latencies(), "s", better=None)
        recorder.metric(f"ramp.c{c}.throughput", result.throughput, "images/s", better="higher")


def test_image_uploads_under_load(editor, load, profile, recorder, make_edit):
    """Edits kept busy at the target's concurrency, each uploading its input (cards of four shapes, each fitted
    to the request): every one answered, none lost, throughput recorded."""
    size = profile.get("load_size")

    def edit(i):
        card = images.card(size + 16 * (i % 4), size)  # four shapes of input, each fitted to the request
        return make_edit(f"edit under load {i}", image=card, height=size, width=size,
                         num_inference_steps=profile.get("load_steps"), seed=i)

    result = load.closed(edit, concurrency=editor.capabilities.busy, count=profile.get("throughput_requests"))
    assert_accounted(result, recorder, "edit_load")
    recorder.percentiles("edit_load.latency", result.latencies(), "s", better="lower")
    recorder.metric("edit_load.throughput", result.throughput, "images/s", better="higher")


def test_sustained_open_loop(target, load, profile, recorder, load_request):
    note_load(target, load, recorder)
    rate, seconds = profile.get("open_rate"), profile.get("open_duration")
    result = load.open(load_request, rate=rate, duration=seconds, poisson=profile.get("open_poisson"),
                       timeout=profile.get("load_timeout"))
    recorder.artifact("open-loop", {**result.summary(), "timeline": result.timeline()})
    recorder.metric("open_loop.late_fraction", result.late_fraction, better="lower")
    assert result.valid, (f"the load generator fell behind ({result.late_fraction:.1%} late sends at {rate}/s): "
                          "these numbers would understate latency, so the run is invalid")
    assert_accounted(result, recorder, "open_loop")
    recorder.percentiles("open_loop.latency", result.latencies(), "s", better="lower")
    recorder.metric("open_loop.throughput", result.throughput, "images/s", better="higher")
    recorder.metric("open_loop.success_rate", result.counts()["ok"] / len(result.outcomes), better="higher")


def test_overflow_is_refused_cleanly_then_served(target, load, profile, recorder, make_request):
    caps = target.capabilities
    if not caps.max_queue:
        pytest.skip(f"{target.name} declares no admission limit, so there is no overflow to provoke")
    admitted = caps.concurrency + caps.max_queue
    burst = admitted + profile.get("overflow_extra")
    size = profile.get("overflow_size")
    request = make_request("overflow", height=size, width=size, num_inference_steps=profile.get("overflow_steps"))
    result = load.closed(lambda i: request, concurrency=burst, count=burst)
    counts = result.counts()
    assert_accounted(result, recorder, "overflow")
    assert counts["overloaded"] >= 1, f"{burst} requests at once, {admitted} admitted, none refused"
    assert counts["ok"] >= 1, "nothing was served during the burst"
    after = target.generate(request)
    assert after.images.shape == (1, size, size, 3), "the target did not serve again after the overflow"


def test_highest_sustained_rate(target, load, profile, recorder, load_request):
    """Open-loop steps at rising rates: the highest rate served in full (nothing shed, nothing failed,
    throughput within 10% of the offered rate), the first rate at which the target sheds load, and the highest
    rate served in full with p99 latency under the profile's capacity_p99_bound (MLPerf's Server criterion)."""
    rate, top = profile.get("capacity_start"), profile.get("capacity_max")
    if rate is None:  # half of what it serves kept busy from several threads, as the open loop sends (one
        # request at a time from one thread is faster in process, where threads take turns into torch's pool)
        busy = load.closed(load_request, concurrency=target.capabilities.busy, count=8)
        assert_accounted(busy)
        assert busy.counts()["ok"], "no request was served to start the search from"
        rate = 0.5 * busy.throughput
    else:  # the first requests pay for lazy initialisation, not the first step
        assert_accounted(load.closed(load_request, concurrency=1, count=profile.get("warmup")))
    start, bound = rate, profile.get("capacity_p99_bound")
    seconds, factor = profile.get("capacity_step"), profile.get("capacity_factor")
    sustained, shed, bounded, steps = 0.0, None, None, []
    while rate <= top and shed is None:
        if rate * seconds < 1:  # a step too short to send anything at this rate
            rate *= factor
            continue
        result = load.open(load_request, rate=rate, duration=seconds, timeout=profile.get("load_timeout"))
        steps.append({**result.summary(), "p99_bound": bound})
        if not result.valid:
            recorder.note(f"the load generator could not keep up at {rate:.1f}/s: the search stops there")
            break
        assert_accounted(result)
        counts = result.counts()
        if counts["overloaded"]:
            shed = rate
        elif counts["ok"] == len(result.outcomes) and result.throughput >= 0.9 * rate:
            sustained = rate
            p99 = quantile(result.latencies(), 0.99)
            if p99.value <= bound:
                bounded = (rate, p99)
        rate *= factor
    recorder.artifact("capacity-steps", steps)
    recorder.metric("capacity.sustained_rate", sustained, "requests/s", better="higher")
    if shed is not None:
        recorder.metric("capacity.shed_rate", shed, "requests/s", better="higher")
    elif target.capabilities.max_queue:
        recorder.note(f"no load was shed up to {steps[-1]['offered_rate']:.1f}/s")
    recorder.metric("capacity.p99_bounded_rate", bounded[0] if bounded else 0.0, "requests/s", better="higher")
    if bounded:  # the p99 that met the bound, with its sample count: a p99 of few samples is their largest
        recorder.estimate("capacity.p99_bounded_rate.p99", bounded[1], "s", better=None)
    else:
        recorder.note(f"p99 latency was over {bound:g} s at every rate served in full")
    assert sustained > 0, f"not even {start:.1f}/s was served in full"


def test_load_engines_side_by_side(target, load, profile, recorder, load_request):
    """fluxgate's engine and Locust's against the same target at the same rising rates, taking turns: each one's
    late and unanswered shares, the highest rate each sends with under 1% late (the validity rule), and the p50
    and p99 each measures of the same server at the highest rate both kept up with, beside Locust's own
    (rounded) report of them."""
    if load.name == "fluxgate":
        pytest.skip("runs with --load-engine locust: it sets Locust's workers beside fluxgate's own threads")
    engines = {"fluxgate": Engine(target.generate), "locust": load}
    runs = {name: {} for name in engines}
    for rate in profile.get("engine_rates"):
        for name, engine in engines.items():
            result = engine.open(load_request, rate=rate, duration=profile.get("engine_step"),
                                 timeout=profile.get("load_timeout"))
            assert_accounted(result)
            runs[name][rate] = result
    recorder.artifact("engines", {name: [r.summary() for r in by_rate.values()] for name, by_rate in runs.items()})
    for name, by_rate in runs.items():
        kept = [rate for rate, r in by_rate.items() if r.valid]
        recorder.metric(f"engines.{name}.valid_rate", max(kept, default=0.0), "requests/s", better="higher")
    both = [rate for rate in profile.get("engine_rates") if all(runs[name][rate].valid for name in engines)]
    if not both:
        recorder.note("no rate was sent on time by both engines")
        return
    for name in engines:
        recorder.percentiles(f"engines.{name}.latency", runs[name][both[-1]].latencies(), "s", better=None)
    reported = runs["locust"][both[-1]].meta["locust"]
    recorder.metrics("engines.locust.reported", {f"p{q}": reported[f"p{q}_ms"] / 1000 for q in (50, 99)
                                                 if reported[f"p{q}_ms"] is not None}, "s")
    recorder.note(f"latencies at {both[-1]:g}/s, the highest rate both engines sent on time; Locust's own report "
                  "rounds response times to two significant digits and times them from the send, not the schedule")


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
