"""Distances between image sets, from features that can be kept and merged: the rows of a set may come from any
number of workers or runs, and concatenated they give the exact distance of the whole set.

FID: the Frechet distance between Gaussians fitted to InceptionV3 pool features (torchmetrics'
FrechetInceptionDistance with torch-fidelity's network and weights). It needs more images than features to be
stable, so at CI's sample sizes it is biased upwards: compare it with a baseline, not with published values.
CMMD (Jayasumana et al. 2024): the maximum mean discrepancy between CLIP embeddings under a Gaussian kernel,
estimated without bias, so it is about 0 for sets from one distribution at any size.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from harness.metrics.pixel import nchw
from harness.metrics.weights import INCEPTION, checkpoint

CMMD_BANDWIDTH = 10.0  # the paper's sigma for unit-length CLIP embeddings
CMMD_SCALE = 1000.0    # the paper reports MMD^2 x 1000


class Inception:
    """`Inception()(images)`: the pool features (N, 2048) of uint8 (N, H, W, 3) images, by the network and
    resizing torchmetrics' FID uses (torch-fidelity's InceptionV3, TF1-compatible bilinear resize). FEATURES
    64, 192 or 768 take an earlier layer's, as torchmetrics offers: cheaper, and stable with fewer images."""

    def __init__(self, device: str | torch.device = "cpu", features: int = 2048):
        from torchmetrics.image.fid import NoTrainInceptionV3

        if features not in (64, 192, 768, 2048):
            raise ValueError(f"features={features!r}: InceptionV3 gives 64, 192, 768 or 2048")
        self.device = torch.device(device)
        self.model = NoTrainInceptionV3(name="inception-v3-compat", features_list=[str(features)], antialias=False,
                                        feature_extractor_weights_path=str(checkpoint("fid", INCEPTION)))
        self.model.to(self.device)

    @torch.inference_mode()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.model(nchw(images).to(self.device)).float().cpu().numpy()


class Given(nn.Module):
    """A feature extractor for features already extracted: FID's accumulator takes them as they are."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(a: np.ndarray, b: np.ndarray) -> float:
    """FID between two feature sets (n, d), as torchmetrics computes it (unbiased covariances, float64)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"FID needs two sets of at least 2 feature vectors of one size: {a.shape} and {b.shape}")
    metric = FrechetInceptionDistance(feature=Given(a.shape[1])).set_dtype(torch.float64)
    metric.update(torch.from_numpy(np.array(a, np.float64)), real=True)
    metric.update(torch.from_numpy(np.array(b, np.float64)), real=False)
    return float(metric.compute())


def cmmd(a: np.ndarray, b: np.ndarray) -> float:
    """CMMD x 1000 between two sets of unit-length CLIP embeddings (n, d): the unbiased estimate of MMD^2
    (Gretton et al. 2012), which for sets of one size pairs row i of a with row i of b, so a set against itself
    is exactly 0. It can come out slightly below 0 when the sets do not differ."""
    if a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"CMMD needs two sets of at least 2 embeddings of one size: {a.shape} and {b.shape}")
    x, y = torch.from_numpy(np.array(a, np.float64)), torch.from_numpy(np.array(b, np.float64))

    def kernel(p, q):
        return torch.exp(-torch.cdist(p, q).square() / (2 * CMMD_BANDWIDTH**2))

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    m, n = len(x), len(y)
    within = (kxx.sum() - kxx.trace()) / (m * (m - 1)) + (kyy.sum() - kyy.trace()) / (n * (n - 1))
    across = (kxy.sum() - kxy.trace()) / (m * (m - 1)) if m == n else kxy.mean()
    return float(CMMD_SCALE * (within - 2 * across))
