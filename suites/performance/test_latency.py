"""Warm latency: percentiles over repeated requests after warm-up."""
from harness.timing import LatencyStats, timed_generate
from harness.types import GenerationRequest


def test_warm_latency(target, profile, recorder):
    size = profile.get("size", 256)
    request = GenerationRequest("a lighthouse at dusk", height=size, width=size,
                                num_inference_steps=profile.get("steps", 4))
    for _ in range(profile.get("warmup", 1)):
        timed_generate(target, request)
    samples = [timed_generate(target, request).timings["total"] for _ in range(profile.get("latency_runs", 5))]
    stats = LatencyStats.of(samples)
    recorder.metrics("latency", {"p50": stats.p50, "p95": stats.p95, "p99": stats.p99}, "s", better="lower")
    recorder.metric("throughput", 1 / stats.mean, "images/s", better="higher")
