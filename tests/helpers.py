"""Helpers shared by the tests: small requests and the reference-vs-diffusers equivalence check."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness.types import GenerationRequest

PRESET_NAMES = ["tiny-dev", "tiny-schnell"]


@dataclass(frozen=True)
class Tolerance:
    latent_atol: float       # on the packed latents after the last step (magnitude ~5)
    max_levels: int          # on uint8 images, the worst pixel
    mean_levels: float       # on uint8 images, on average


# fp32 on the CPU. Both sides run the same arithmetic in the same order except that the reference fuses
# q, k, v (and a single block's MLP input) into one matmul, so a difference can only be float rounding:
# 1e-4 on the latents is two orders above fp32's 1e-6 relative noise, and one uint8 level allows a value
# that sits on a rounding edge. Measured: identical to the bit on this machine.
FP32 = Tolerance(latent_atol=1e-4, max_levels=1, mean_levels=0.01)
# bf16 keeps 8 mantissa bits: one ulp at magnitude 4-8 is 1/32, and the fused and split matmuls round
# their outputs apart. Four ulps on the latents; images within a level on average. Measured: latents
# within 2 ulps, images 0.6 levels on average and 6 at worst.
BF16 = Tolerance(latent_atol=4 / 32, max_levels=12, mean_levels=1.0)


def request(**kw) -> GenerationRequest:
    """A small request: the defaults keep a test under a second on the tiny presets."""
    return GenerationRequest(**{"prompt": "a cat holding a sign", "height": 64, "width": 64,
                                "num_inference_steps": 2, "seed": 0, **kw})


def assert_equivalent(reference, pipeline, req: GenerationRequest, tol: Tolerance = FP32) -> int:
    """The reference and diffusers agree on latents and images; returns the largest image difference."""
    txt, vec, _ = reference.encode([req.prompt] if isinstance(req.prompt, str) else list(req.prompt))
    ours, theirs = reference.sample(req, txt, vec), pipeline.run(req, "latent")
    np.testing.assert_allclose(ours.float().numpy(), theirs.float().numpy(), rtol=0, atol=tol.latent_atol)
    a, b = reference.generate(req).images, pipeline.generate(req).images
    assert a.shape == b.shape
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= tol.max_levels and diff.mean() <= tol.mean_levels, \
        f"images differ by {diff.mean():.3f} levels on average, {diff.max()} at worst"
    return int(diff.max())
