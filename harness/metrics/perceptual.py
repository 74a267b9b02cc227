"""LPIPS (Zhang et al. 2018): distance between images in a network's features, weighted by layers fitted to
human judgements of which of two images looks closer. 0 for identical images; about 0.1 is a difference people
notice, and pixel-exact changes such as torch.compile's keep it near 0 where PSNR falls to 20 dB."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from harness.metrics.weights import LPIPS_BACKBONES, checkpoint, hub_holding


def unit_float(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255


class LPIPS:
    """`LPIPS("alex")(a, b)`: the distance of each image pair of two uint8 (N, H, W, 3) batches."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu"):
        import lpips

        if net not in LPIPS_BACKBONES:
            raise ValueError(f"lpips_net={net!r}: must be one of {', '.join(LPIPS_BACKBONES)}")
        self.net, self.device = net, torch.device(device)
        backbone = checkpoint("lpips", LPIPS_BACKBONES[net])  # the linear layers ship with the lpips package
        with hub_holding(backbone), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's note that `pretrained=` is deprecated
            self.model = lpips.LPIPS(net=net, verbose=False).to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS compares images of one size: {a.shape} and {b.shape}")
        d = self.model(unit_float(a).to(self.device), unit_float(b).to(self.device), normalize=True)
        return d.flatten().double().cpu().numpy()
