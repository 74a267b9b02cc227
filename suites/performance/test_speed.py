"""Speed and memory: cold start, warm latency, throughput, scaling, peak memory, speed-up over a baseline.

Numbers are recorded, never asserted here: the profile's thresholds and the baseline report gate them.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from harness.memory import MemorySampler, cuda_peak
from harness.target import make_target
from harness.timing import LatencyStats, timed_generate


def median_latency(target, request, runs: int) -> float:
    return float(np.median([timed_generate(target, request).timings["total"] for _ in range(runs)]))


def test_cold_start(target, make_request, profile, recorder):
    if target.capabilities.remote:
        return remote_cold_start(target, make_request, profile, recorder)
    if not target.spec:
        pytest.skip(f"{target.name} was not made from a SPEC, so a fresh copy cannot be started")
    fresh = make_target(target.spec)
    start = time.perf_counter()
    fresh.start()
    loaded = time.perf_counter()
    try:
        timed_generate(fresh, make_request())
    finally:
        done = time.perf_counter()
        fresh.close()
    recorder.metric("cold_start", done - start, "s", better="lower")
    recorder.metric("cold_start.load", loaded - start, "s", better="lower")
    recorder.metric("cold_start.first_request", done - loaded, "s", better="lower")
    recorder.note("a fresh copy of the target was started beside the one under test (in process: a second model)")


def remote_cold_start(target, make_request, profile, recorder):
    """A server elsewhere cannot be restarted from here: its cold start is the session's first request (a
    scaled-to-zero Modal app starts a container and loads the model for it), set against the same request warm."""
    if target.first_call is None:
        timed_generate(target, make_request())  # nothing has been asked yet: this is the first request
    request, first = target.first_call
    warm = median_latency(target, request, profile.get("latency_runs", 5))
    recorder.metric("cold_start.first_request", first, "s", better="lower")
    recorder.metric("cold_start.warm", warm, "s", better="lower")
    recorder.metric("cold_start.excess", first - warm, "s", better="lower")
    recorder.note(f"{target.name} is served elsewhere: its first request of the session is taken as the cold "
                  "start, which it is only if the server was cold")


def test_warm_latency(target, make_request, profile, recorder):
    request = make_request("a lighthouse at dusk")
    for _ in range(profile.get("warmup", 1)):
        timed_generate(target, request)
    samples = [timed_generate(target, request).timings["total"] for _ in range(profile.get("latency_runs", 5))]
    stats = LatencyStats.of(samples)
    recorder.metrics("latency", {"p50": stats.p50, "p95": stats.p95, "p99": stats.p99}, "s", better="lower")
    recorder.metric("throughput", 1 / stats.mean, "images/s", better="higher")
    recorder.artifact("latency-samples", samples)


@pytest.mark.parametrize("dimension", ["resolution", "steps", "batch"])
def test_scaling(target, make_request, profile, recorder, dimension):
    if dimension == "batch" and not target.capabilities.batching:
        pytest.skip(f"{target.name} takes one image per request")
    points = profile.get(f"scaling_{dimension}", {"resolution": [64, 128, 256], "steps": [1, 2, 4],
                                                   "batch": [1, 2, 4]}[dimension])
    runs = profile.get("scaling_runs", 2)
    size = profile.get("load_size", 64)
    xs, ys = [], []
    for p in points:
        fields = {"resolution": {"height": p, "width": p}, "steps": {"height": size, "width": size,
                                                                      "num_inference_steps": p},
                  "batch": {"height": size, "width": size, "num_images": p}}[dimension]
        request = make_request(**fields)
        timed_generate(target, request)  # warm this shape
        xs.append(p * p / 1e6 if dimension == "resolution" else p)
        ys.append(median_latency(target, request, runs))
    slope, intercept = np.polyfit(xs, ys, 1)
    fit = np.polyval([slope, intercept], xs)
    r2 = 1 - np.sum((np.array(ys) - fit) ** 2) / max(np.sum((np.array(ys) - np.mean(ys)) ** 2), 1e-12)
    unit = {"resolution": "s/MP", "steps": "s/step", "batch": "s/image"}[dimension]
    recorder.metric(f"scaling.{dimension}.slope", slope, unit, better="lower")
    recorder.metric(f"scaling.{dimension}.intercept", intercept, "s")
    recorder.metric(f"scaling.{dimension}.r2", r2)
    recorder.artifact(f"scaling-{dimension}", {"x": xs, "seconds": ys, "unit": unit})


def test_peak_memory(target, make_request, profile, recorder):
    if target.capabilities.remote:
        pytest.skip(f"{target.name} is served by another process: its memory is not this one's to measure")
    peaks = {}
    for n in (1, 2) if target.capabilities.batching else (1,):
        cuda_peak(reset=True)
        with MemorySampler(interval=0.02) as mem:
            target.generate(make_request(num_images=n))
        peaks[n] = {"host": mem.peak_host / 2**20, "gpu": (cuda_peak() or 0) / 2**20,
                    "device": (mem.peak_device or 0) / 2**20}
    recorder.metric("memory.host_peak", peaks[1]["host"], "MiB", better="lower")
    if target.capabilities.local_gpu:
        recorder.metric("memory.gpu_peak", peaks[1]["gpu"], "MiB", better="lower")
    if peaks[1]["device"]:
        recorder.metric("memory.device_peak", peaks[1]["device"], "MiB", better="lower")
    if 2 in peaks:
        key = "gpu" if target.capabilities.local_gpu else "host"
        recorder.metric("memory.per_extra_image", peaks[2][key] - peaks[1][key], "MiB", better="lower")


def test_speedup_over_baseline_target(target, baseline_target, make_request, profile, recorder):
    """The median of paired ratios: each round times both targets on the same request, in alternating order,
    so drift in the machine affects both sides of a ratio alike."""
    request = make_request("a red vintage car on a rainy street")
    timed_generate(target, request), timed_generate(baseline_target, request)
    ratios = []
    for i in range(profile.get("speedup_runs", 5)):
        pair = (target, baseline_target) if i % 2 == 0 else (baseline_target, target)
        times = {t: timed_generate(t, request).timings["total"] for t in pair}
        ratios.append(times[baseline_target] / times[target])
    recorder.metric("speedup", float(np.median(ratios)), "x", better="higher")
    recorder.artifact("speedup-ratios", ratios)


@pytest.mark.benchmark
def test_benchmark_one_request(target, make_request, profile, recorder, benchmark):
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (it is under xdist or --benchmark-disable)")
    request = make_request()
    benchmark.pedantic(target.generate, args=(request,), rounds=profile.get("benchmark_rounds", 5), iterations=1,
                       warmup_rounds=1)
    recorder.metrics("benchmark", {"median": benchmark.stats.stats.median, "iqr": benchmark.stats.stats.iqr}, "s")
