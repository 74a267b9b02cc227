"""Timers that wait for the GPU where it matters, and latency statistics."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from harness.target import Target
from harness.types import GenerationRequest, GenerationResult


def synchronize(target: Target) -> None:
    """Wait for queued CUDA work of an in-process GPU target, so a timer stops when the work is done."""
    if target.capabilities.local_gpu:
        import torch

        torch.cuda.synchronize()


def timed_generate(target: Target, request: GenerationRequest) -> GenerationResult:
    """target.generate(request) with timings["total"] measured outside the target, end to end (or, for a
    target that times itself in its own process, where it ran: the pipe between processes is not its cost)."""
    synchronize(target)
    start = time.perf_counter()
    result = target.generate(request)
    synchronize(target)
    if not (target.times_itself and "total" in result.timings):
        result.timings["total"] = time.perf_counter() - start
    return result


def paired_ratios(target: Target, baseline: Target, request: GenerationRequest, rounds: int,
                  baseline_request: GenerationRequest | None = None) -> list[float]:
    """Baseline time / target time, ROUNDS times, after one warm-up each: each round times both in alternating
    order, so drift in the machine affects both sides of a ratio alike. The baseline is timed on
    BASELINE_REQUEST where given (the same target on another request: an edit against text to image)."""
    sides = {"target": (target, request), "baseline": (baseline, baseline_request or request)}
    for t, r in sides.values():
        timed_generate(t, r)
    ratios = []
    for i in range(rounds):
        order = ["target", "baseline"] if i % 2 == 0 else ["baseline", "target"]
        times = {side: timed_generate(*sides[side]).timings["total"] for side in order}
        ratios.append(times["baseline"] / times["target"])
    return ratios


@dataclass(frozen=True)
class LatencyStats:
    n: int
    mean: float
    std: float
    min: float
    p50: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: list[float]) -> LatencyStats:
        if not samples:
            raise ValueError("latency statistics need at least one sample")
        x = np.asarray(samples, dtype=float)
        p50, p95, p99 = np.percentile(x, [50, 95, 99])  # linear interpolation between order statistics
        return cls(len(x), float(x.mean()), float(x.std()), float(x.min()), float(p50), float(p95), float(p99),
                   float(x.max()))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
