"""Timers and memory: the numbers every benchmark is built from."""
from __future__ import annotations

import mmap
import time

import numpy as np
import pytest

from harness.energy import EnergyMeter, unavailable
from harness.memory import MemorySampler, cuda_peak, host_rss, nvml_used
from harness.timing import LatencyStats, timed_generate
from helpers import request


def test_latency_stats_are_order_statistics():
    stats = LatencyStats.of([0.5, 0.1, 0.3, 0.2, 0.4])
    assert (stats.n, stats.min, stats.p50, stats.max) == (5, 0.1, 0.3, 0.5)
    assert stats.mean == pytest.approx(0.3) and stats.p95 == pytest.approx(0.48)
    many = LatencyStats.of(list(np.linspace(1, 100, 100)))
    assert many.p99 == pytest.approx(99.01) and many.p50 == pytest.approx(50.5)
    with pytest.raises(ValueError, match="at least one"):
        LatencyStats.of([])


def test_timed_generate_adds_total_outside_the_target(started):
    result = timed_generate(started("reference:preset=tiny-dev"), request())
    inside = sum(v for k, v in result.timings.items() if k != "total")
    assert result.timings["total"] >= inside > 0


def test_sampler_sees_host_memory_grow():
    with MemorySampler(interval=0.01) as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        block += 1
        time.sleep(0.1)
    assert mem.peak_host - mem.samples[0][1] > 150 * 2**20 and len(mem.samples) >= 3
    del block
    assert host_rss() > 0


def kept(size: int) -> mmap.mmap:
    """SIZE bytes of new resident memory: pages mapped afresh and touched, which the allocator cannot serve from
    memory an earlier test freed and that is still resident (np.ones can, and a leak then looks smaller)."""
    pages = mmap.mmap(-1, size)
    np.frombuffer(pages, np.uint8)[:] = 1
    return pages


def test_a_leak_is_measured_per_request_whatever_the_rate():
    """20 "requests" that each keep 8 MiB, answered slowly and then quickly: the slope per request is the same
    8 MiB either way, where a slope per second would differ by the ratio of the rates."""
    for gap in (0.03, 0.01):
        hoard, answered = [], []
        with MemorySampler(interval=0.005) as mem:
            for _ in range(20):
                hoard.append(kept(8 * 2**20))
                answered.append(time.perf_counter())
                time.sleep(gap)
        assert mem.per_request(answered) / 2**20 == pytest.approx(8, rel=0.2)
    answered = []
    with MemorySampler(interval=0.005) as mem:  # no leak: answers with nothing kept
        for _ in range(20):
            time.sleep(0.01)
            answered.append(time.perf_counter())
    assert abs(mem.per_request(answered)) / 2**20 < 1
    assert np.isnan(mem.per_request([]))  # no answers, no evidence either way: NaN, which passes no gate


def test_without_a_gpu_device_numbers_are_absent_not_zero():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the gpu tests cover it")
    assert cuda_peak() is None and nvml_used() is None
    with MemorySampler(interval=0.01) as mem:
        pass
    assert mem.peak_device is None


def test_energy_needs_the_targets_gpu_and_says_why_not():
    assert unavailable(None) == "the target does not run on a CUDA device of this host"


@pytest.mark.gpu
def test_energy_is_read_from_the_gpu_while_it_works():
    import torch

    if unavailable(0):
        pytest.skip(unavailable(0))
    x = torch.randn(8192, 8192, device="cuda:0")
    with EnergyMeter(gpu=0) as meter:
        for _ in range(50):  # about a second of fp32 matmuls on an H100
            x = x @ x
            x /= x.norm()
        torch.cuda.synchronize()
    assert meter.joules > 1 and meter.utilisation > 10 and meter.busy, (meter.joules, meter.busy)
