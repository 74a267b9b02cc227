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


def host_rss(include_children: bool = False, pid: int | None = None) -> int:
    """Resident bytes of this process, or of process PID (and, if asked, of its children: the oracle and the
    baseline target run as children, and their memory is not the target's)."""
    me = psutil.Process(pid or os.getpid())
    procs = [me] + (me.children(recursive=True) if include_children else [])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # a child that just exited
            pass
    return total


def cuda_peak(device=None, reset: bool = False) -> int | None:
    """torch.cuda's peak allocated bytes on `device` (the target's; None: the current one) since the last
    reset; None without CUDA or for a device that is not a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or device is not None and torch.device(device).type != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated(device)
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return peak


def gpu_index(device) -> int | None:
    """The index of a CUDA device (NVML numbers GPUs the same way unless CUDA_VISIBLE_DEVICES reorders them)."""
    import torch

    if device is None or torch.device(device).type != "cuda":
        return None
    index = torch.device(device).index
    return torch.cuda.current_device() if index is None else index


def nvml_open():
    """pynvml and one handle per GPU, or None where there is no library, driver or device."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml, [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    except Exception:  # NVML is simply absent here
        return None


def _nvml_read(nvml, gpu: int | None = None) -> list[int]:
    """Bytes used on each GPU, or on GPU `gpu` alone."""
    pynvml, handles = nvml
    return [pynvml.nvmlDeviceGetMemoryInfo(h).used for i, h in enumerate(handles) if gpu in (None, i)]


def nvml_used() -> list[int] | None:
    """Bytes used on each GPU by all processes, from NVML; None where NVML is absent."""
    nvml = nvml_open()
    if nvml is None:
        return None
    try:
        return _nvml_read(nvml)
    finally:
        nvml[0].nvmlShutdown()


@dataclass
class MemorySampler:
    """Samples host RSS and NVML device memory in a background thread while the block runs.

        with MemorySampler(interval=0.05, gpu=0) as mem:
            target.generate(request)
        mem.peak_host, mem.peak_device, mem.samples
    """
    interval: float = 0.05
    gpu: int | None = None              # the GPU NVML reads (the target's); None: no device (a CPU target)
    pid: int | None = None              # the process whose memory is sampled; None: this one
    samples: list[tuple[float, int, int | None]] = field(default_factory=list)  # (seconds, host, device)

    def __enter__(self) -> MemorySampler:
        self._stop = threading.Event()
        self.started = time.perf_counter()
        self._nvml = nvml_open() if self.gpu is not None else None
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
        device = _nvml_read(self._nvml, self.gpu)[0] if self._nvml else None
        self.samples.append((time.perf_counter() - self.started, host_rss(pid=self.pid), device))

    @property
    def peak_host(self) -> int:
        return max(s[1] for s in self.samples)

    @property
    def peak_device(self) -> int | None:
        used = [s[2] for s in self.samples if s[2] is not None]
        return max(used) if used else None

    def per_request(self, answered: list[float], device: bool = False) -> float:
        """Least-squares growth of host (or device) memory in bytes per request answered, from the
        perf_counter() times of the answers: a leak is memory kept per request, whatever the request rate."""
        import numpy as np

        done = np.sort(np.asarray(answered, dtype=float))
        column = 2 if device else 1
        points = [(np.searchsorted(done, self.started + s[0], side="right"), s[column]) for s in self.samples
                  if s[column] is not None]
        n, y = np.array([p[0] for p in points], dtype=float), np.array([p[1] for p in points], dtype=float)
        # too few points to fit is no evidence of "no leak": NaN, which passes no gate
        return float(np.polyfit(n, y, 1)[0]) if len(n) > 2 and np.ptp(n) > 0 else float("nan")
