"""Speed and memory: cold start, warm latency, throughput, scaling, peak memory, speed-up over a baseline.

Numbers are recorded, never asserted here: the profile's thresholds and the baseline report gate them.
"""
from __future__ import annotations

import numpy as np
import pytest

from harness.coldstart import cold_start
from harness.energy import EnergyMeter, unavailable
from harness.load import closed_loop
from harness.memory import MemorySampler, cuda_peak, gpu_index
from harness.stats import quantile
from harness.target import parse_spec
from harness.timing import paired_ratios, timed_generate


def median_latency(target, request, runs: int) -> float:
    return float(np.median([timed_generate(target, request).timings["total"] for _ in range(runs)]))


def test_cold_start(target, make_request, profile, recorder):
    """In a fresh process, each part timed: interpreter start, imports, device initialisation, weight load,
    the first image. Only the OS's page cache stays warm (the weights' files were read before)."""
    if target.capabilities.remote:
        return remote_cold_start(target, profile, recorder)
    if not target.spec:
        pytest.skip(f"{target.name} was not made from a SPEC, so a fresh process cannot start one")
    phases = cold_start(target.spec, make_request(), timeout=profile.get("cold_start_timeout"))
    recorder.metric("cold_start", phases.pop("total"), "s", better="lower")
    for part, seconds in phases.items():
        recorder.metric(f"cold_start.{part}", seconds, "s", better="lower")
    recorder.note("measured in a fresh Python process; the weights' files may still be in the OS page cache")


def test_compile_cache_shortens_cold_start(target, make_request, profile, recorder, tmp_path):
    """A compiling target started twice in fresh processes, each with an empty Inductor cache of its own, as on
    a new machine: first with no compile cache (it compiles everything, then writes the cache file), then with
    that file (torch.compiler's mega-cache) to load. One start each: the note says so."""
    options = getattr(target, "options", None)
    if not getattr(options, "compile", ""):
        pytest.skip(f"{target.name} compiles nothing (no compile option)")
    kind, given = parse_spec(target.spec)
    spec = f"{kind}:" + ",".join(f"{k}={v}" for k, v in {**given, "compile_cache": tmp_path / "mega"}.items())
    request, timeout = make_request(), profile.get("cold_start_timeout")
    starts = {how: cold_start(spec, request, timeout, env={"TORCHINDUCTOR_CACHE_DIR": str(tmp_path / how)})
              for how in ("uncached", "cached")}
    for how, phases in starts.items():
        recorder.metric(f"compile.cold_start.{how}", phases["total"], "s", better="lower")
        recorder.metric(f"compile.first_request.{how}", phases["first_request"], "s", better="lower")
    first = {how: phases["first_request"] for how, phases in starts.items()}
    recorder.metric("compile.cache_saving", 1 - first["cached"] / first["uncached"], "", better="higher")
    recorder.note(f"one cold start each, with a {(tmp_path / 'mega').stat().st_size / 2**20:.1f} MiB cache file; "
                  "cache_saving is the share of the first request's time the file saves")


def remote_cold_start(target, profile, recorder):
    """A server elsewhere cannot be restarted from here: its cold start is the session's first request (a
    scaled-to-zero Modal app starts a container and loads the model for it), which the target fixture sends
    before any test, set against the same request warm."""
    request, first = target.first_call
    warm = median_latency(target, request, profile.get("latency_runs"))
    recorder.metric("cold_start", first, "s", better="lower")  # gated as an in-process cold start is
    recorder.metric("cold_start.first_request", first, "s", better="lower")
    recorder.metric("cold_start.warm", warm, "s", better="lower")
    recorder.metric("cold_start.excess", first - warm, "s", better="lower")
    recorder.note(f"{target.name} is served elsewhere: its first request of the session is taken as the cold "
                  "start, which it is only if the server was cold")


def test_warm_latency(target, make_request, profile, recorder):
    request = make_request("a lighthouse at dusk")
    for _ in range(profile.get("warmup")):
        timed_generate(target, request)
    samples = [timed_generate(target, request).timings["total"] for _ in range(profile.get("latency_runs"))]
    recorder.percentiles("latency", samples, "s", better="lower")
    recorder.metric("throughput.sequential", 1 / float(np.mean(samples)), "images/s", better="higher")
    recorder.artifact("latency-samples", samples)


def test_throughput(target, make_request, profile, recorder):
    """Images per second with the target kept busy (Capabilities.busy requests in flight)."""
    in_flight = target.capabilities.busy
    request = make_request("a lighthouse at dusk")
    closed_loop(target.generate, lambda i: request, concurrency=in_flight, count=in_flight)  # warm every worker
    result = closed_loop(target.generate, lambda i: request, concurrency=in_flight,
                         count=max(profile.get("throughput_requests"), 2 * in_flight))
    counts = result.counts()
    assert counts["ok"] == len(result.outcomes), f"requests failed while kept busy: {counts}"
    recorder.metric("throughput", counts["ok"] * request.num_images / result.duration, "images/s", better="higher")
    recorder.note(f"{len(result.outcomes)} requests, {in_flight} in flight, over {result.duration:.2f} s")


@pytest.mark.parametrize("dimension", ["resolution", "steps", "batch"])
def test_scaling(target, make_request, profile, recorder, dimension):
    if dimension == "batch" and not target.capabilities.batching:
        pytest.skip(f"{target.name} takes one image per request")
    points = profile.get(f"scaling_{dimension}")
    runs = profile.get("scaling_runs")
    size = profile.get("load_size")
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
    device = getattr(target, "device", None)  # peaks on the target's own GPU, not whichever is current
    peaks = {}
    for n in (1, 2) if target.capabilities.batching else (1,):
        cuda_peak(device, reset=True)
        with MemorySampler(interval=0.02, gpu=gpu_index(device)) as mem:
            target.generate(make_request(num_images=n))
        peaks[n] = {"host": mem.peak_host / 2**20, "gpu": (cuda_peak(device) or 0) / 2**20,
                    "device": (mem.peak_device or 0) / 2**20}
    recorder.metric("memory.host_peak", peaks[1]["host"], "MiB", better="lower")
    if target.capabilities.local_gpu:
        recorder.metric("memory.gpu_peak", peaks[1]["gpu"], "MiB", better="lower")
    if peaks[1]["device"]:
        recorder.metric("memory.device_peak", peaks[1]["device"], "MiB", better="lower")
    if 2 in peaks:
        key = "gpu" if target.capabilities.local_gpu else "host"
        recorder.metric("memory.per_extra_image", peaks[2][key] - peaks[1][key], "MiB", better="lower")


def test_energy_per_image(target, make_request, profile, recorder):
    """Joules per image from NVML's energy counter over `latency_runs` warm requests, and the GPU's mean
    utilisation while they ran; a skip with the reason where the target's GPU is not here to read."""
    gpu = None if target.capabilities.remote else gpu_index(getattr(target, "device", None))
    reason = unavailable(gpu)
    if reason:
        pytest.skip(f"no energy for {target.name}: {reason}")
    request, runs = make_request(), profile.get("latency_runs")
    target.generate(request)  # warm: the first request's lazy set-up is not what an image costs
    with EnergyMeter(gpu=gpu) as meter:
        for _ in range(runs):
            target.generate(request)
    recorder.metric("energy.joules_per_image", meter.joules / (runs * request.num_images), "J", better="lower")
    recorder.metric("energy.gpu_utilisation", meter.utilisation, "%", better="higher")
    recorder.note(f"{runs} requests; utilisation from {len(meter.busy)} samples; NVML counts the whole board")


def test_speedup_over_baseline_target(target, baseline_target, make_request, profile, recorder):
    """The median of paired ratios (harness.timing.paired_ratios), with its order-statistic interval. The
    baseline target runs in a process of its own and times itself there."""
    request = make_request("a red vintage car on a rainy street")
    ratios = paired_ratios(target, baseline_target, request, profile.get("speedup_runs"))
    recorder.estimate("speedup", quantile(ratios, 0.5), "x", better="higher")
    recorder.artifact("speedup-ratios", ratios)


@pytest.mark.benchmark
def test_benchmark_one_request(target, make_request, profile, recorder, benchmark):
    if benchmark.disabled:
        pytest.skip("pytest-benchmark is disabled (it is under xdist or --benchmark-disable)")
    request = make_request()
    benchmark.pedantic(target.generate, args=(request,), rounds=profile.get("benchmark_rounds"), iterations=1,
                       warmup_rounds=1)
    recorder.metrics("benchmark", {"median": benchmark.stats.stats.median, "iqr": benchmark.stats.stats.iqr}, "s")


def test_edit_latency_against_text_to_image(editor, make_edit, make_request, profile, recorder):
    """What the input image costs: an edit's latency over text to image's at the same size and steps, per
    resolution (the median of paired ratios and its interval). Kontext appends the input's tokens, so at the
    request's size (image_fit "request") attention runs over twice the tokens."""
    sizes = profile.get("scaling_resolution")
    for size in sizes:
        edit, plain = make_edit(height=size, width=size), make_request(height=size, width=size)
        ratios = paired_ratios(editor, editor, edit, profile.get("speedup_runs"), baseline_request=plain)
        recorder.estimate(f"edit.latency_ratio.r{size}", quantile([1 / r for r in ratios], 0.5), "x", better="lower")
