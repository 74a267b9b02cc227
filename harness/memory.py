"""Memory: host RSS always, torch.cuda peaks for in-process GPU work, NVML for the whole device.

NVML sees every process on the GPU, so a Triton or HTTP server on this host is measured too, which
torch.cuda, counting only this process's allocator, cannot do.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import psutil


def host_rss(include_children: bool = True) -> int:
    """Resident bytes of this process (and, by default, the servers it started)."""
    me = psutil.Process(os.getpid())
    procs = [me] + (me.children(recursive=True) if include_children else [])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that just exited
            pass
    return total


def cuda_peak(reset: bool = False) -> int | None:
    """torch.cuda's peak allocated bytes on the current device since the last reset; None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    peak = torch.cuda.max_memory_allocated()
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def _nvml_open():
    """pynvml and one handle per GPU, or None where there is no library, driver or device."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # NVML is simply absent here
        return None


def _nvml_read(nvml) -> list[int]:
    pynvml, handles = nvml
    return [pynvml.nvmlDeviceGetMemoryInfo(h).used for h in handles]


def nvml_used() -> list[int] | None:
    """Bytes used on each GPU by all processes, from NVML; None where NVML is absent."""
    nvml = _nvml_open()
    if nvml is None:
        return None
    try:
        return _nvml_read(nvml)
    finally:
        nvml[0].nvmlShutdown()


@dataclass
class MemorySampler:
    """Samples host RSS and NVML device memory in a background thread while the block runs.

        with MemorySampler(interval=0.05) as mem:
            target.generate(request)
        mem.peak_host, mem.peak_device, mem.samples
    """
    interval: float = 0.05
    samples: list[tuple[float, int, int | None]] = field(default_factory=list)  # (seconds, host, device)

    def __enter__(self) -> MemorySampler:
        self._stop = threading.Event()
        self._start = time.perf_counter()
        self._nvml = _nvml_open()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="fluxgate-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self._nvml:
            self._nvml[0].nvmlShutdown()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        device = sum(_nvml_read(self._nvml)) if self._nvml else None
        self.samples.append((time.perf_counter() - self._start, host_rss(), device))

    @property
    def peak_host(self) -> int:
        return max(s[1] for s in self.samples)

    @property
    def peak_device(self) -> int | None:
        used = [s[2] for s in self.samples if s[2] is not None]
        return max(used) if used else None

    def host_slope(self) -> float:
        """Least-squares growth of host RSS in bytes per second: a leak shows as a steady positive slope."""
        return _slope([(s[0], s[1]) for s in self.samples])

    def device_slope(self) -> float:
        return _slope([(s[0], s[2]) for s in self.samples if s[2] is not None])


def _slope(points: list[tuple[float, float]]) -> float:
    import numpy as np

    t, y = np.array([p[0] for p in points]), np.array([p[1] for p in points], dtype=float)
    return float(np.polyfit(t, y, 1)[0]) if len(t) > 2 and np.ptp(t) > 0 else 0.0
