"""Energy on a GPU: NVML's energy counter (millijoules since the driver loaded; Volta and later) read before
and after a block of requests, and the GPU's utilisation sampled while it runs.

The counter is the board's, so what else runs on that GPU is counted too: run energy alone on the device.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from harness.memory import nvml_open


def unavailable(gpu: int | None) -> str | None:
    """Why energy cannot be read for GPU `gpu` here, or None where it can."""
    if gpu is None:
        return "the target does not run on a CUDA device of this host"
    nvml = nvml_open()
    if nvml is None:
        return "NVML is not available here (no library, driver or GPU)"
    pynvml, handles = nvml
    try:
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handles[gpu])
    except Exception as e:  # a GPU before Volta, or a counter the driver does not expose
        return f"GPU {gpu} has no energy counter NVML can read ({type(e).__name__}: {e})"
    finally:
        pynvml.nvmlShutdown()
    return None


@dataclass
class EnergyMeter:
    """Joules used by GPU `gpu` while the block runs, and its mean utilisation (percent of the time a kernel
    ran) over samples every `interval` seconds.

        with EnergyMeter(gpu=0) as meter:
            target.generate(request)
        meter.joules, meter.utilisation
    """
    gpu: int
    interval: float = 0.05
    joules: float = 0.0
    busy: list[int] = field(default_factory=list)  # utilisation samples, percent

    def __enter__(self) -> EnergyMeter:
        pynvml, handles = nvml_open()  # unavailable() first says why it cannot be opened
        self._nvml, self._handle = pynvml, handles[self.gpu]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fluxgate-energy", daemon=True)
        self._start = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        end = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        self._stop.set()
        self._thread.join()
        self.joules = (end - self._start) / 1000  # the counter is in millijoules
        self._nvml.nvmlShutdown()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.busy.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)

    @property
    def utilisation(self) -> float:
        return sum(self.busy) / len(self.busy) if self.busy else float("nan")
