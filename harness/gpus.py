"""Which GPUs a run may use, and which pytest-xdist worker gets which: worker i gets GPU i, alone."""
from __future__ import annotations

import os


def visible() -> list[str]:
    """The GPUs this run may use: the entries of CUDA_VISIBLE_DEVICES where it is set (indices or UUIDs, as
    given; empty: none), else every device on this machine by index. torch counts them through the driver
    without making a CUDA context, so the controller holds no GPU memory its workers need."""
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return [entry.strip() for entry in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if entry.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def assign(workers: int, gpus: list[str]) -> list[str | None]:
    """Each worker's GPU: worker i gets gpus[i]; None for all where there is no GPU (CPU workers). More workers
    than GPUs is refused: two workers on one GPU would measure each other's latency and memory."""
    if not gpus:
        return [None] * workers
    if workers > len(gpus):
        raise ValueError(f"-n {workers}: {workers} workers but {len(gpus)} GPU{'s' if len(gpus) > 1 else ''} "
                         f"visible (CUDA_VISIBLE_DEVICES={','.join(gpus)}): one GPU per worker; "
                         f"use -n {len(gpus)} or fewer")
    return gpus[:workers]


def seen() -> dict:
    """What this process was given (CUDA_VISIBLE_DEVICES; None where unset) and the GPUs torch sees under it."""
    import torch

    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "gpus": names}
