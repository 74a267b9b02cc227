"""LPIPS (Zhang et al. 2018): distance between images in a network's features, weighted by layers fitted to
human judgements of which of two images looks closer. 0 for identical images; about 0.1 is a difference people
notice, and pixel-exact changes such as torch.compile's keep it near 0 where PSNR falls to 20 dB."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from harness.metrics.pixel import nchw
from harness.metrics.weights import hub_holding, lpips_backbone


class LPIPS:
    """`LPIPS("alex")(a, b)`: the distance of each image pair of two uint8 (N, H, W, 3) batches."""

    def __init__(self, net: str = "alex", device: str | torch.device = "cpu"):
        import lpips

        self.net, self.device = net, torch.device(device)
        with hub_holding(lpips_backbone(net)), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torchvision's note that `pretrained=` is deprecated
            self.model = lpips.LPIPS(net=net, verbose=False).to(self.device).eval().requires_grad_(False)

    @torch.inference_mode()
    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape != b.shape:
            raise ValueError(f"LPIPS compares images of one size: {a.shape} and {b.shape}")
        a, b = (nchw(x).to(self.device).float() / 255 for x in (a, b))
        d = self.model(a, b, normalize=True)  # [0, 1] in
        return d.flatten().double().cpu().numpy()
