"""Pixel metrics between two uint8 image batches (N, H, W, 3), through torchmetrics where it has them."""
from __future__ import annotations

import numpy as np
import torch

PSNR_CAP = 100.0  # dB for identical images, where PSNR is infinite: JSON has no infinity


def nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> uint8 (N, 3, H, W), the layout torch's image models take."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"images of shapes {a.shape} and {b.shape}: need two equal (N, H, W, 3) batches")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    _check(a, b)
    return int(np.abs(a.astype(int) - b.astype(int)).max())


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    _check(a, b)
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def channel_shift(a: np.ndarray, b: np.ndarray) -> float:
    """The largest difference of a colour channel's mean, in levels: a cast of +12 on red is 12, while noise
    and structure that average out are near 0. PSNR and SSIM forgive a cast that a reviewer sees at once."""
    _check(a, b)
    return float(np.abs(a.reshape(-1, 3).mean(axis=0) - b.reshape(-1, 3).mean(axis=0)).max())


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over the batch (capped for identical images)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(a, b)
    value = float(peak_signal_noise_ratio(nchw(a).double(), nchw(b).double(), data_range=255.0))
    return min(value, PSNR_CAP)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Structural similarity, mean over the batch: 1 is identical. Images under 11 px use a smaller window."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(a, b)
    kernel = min(11, (min(a.shape[1:3]) // 2) * 2 - 1)
    return float(structural_similarity_index_measure(nchw(a).double(), nchw(b).double(), data_range=255.0,
                                                     kernel_size=kernel))
