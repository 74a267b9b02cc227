"""Noise, latent packing, position ids, the shifted schedule and the flow-matching Euler sampler, with an image to
edit appended as Kontext conditions on one.

After black-forest-labs/flux (src/flux/sampling.py); the schedule is computed the way diffusers'
FlowMatchEulerDiscreteScheduler computes it (float32 numpy), so both give the same sigmas to the bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from targets.reference.model import Flux


def latent_shape(height: int, width: int, channels: int = 16) -> tuple[int, int, int, int]:
    # 8x VAE, then 2x2 packing: both sides of the latent must be even
    return 1, channels, 2 * (height // 16), 2 * (width // 16)


def get_noise(seeds: list[int], height: int, width: int, dtype: torch.dtype, channels: int = 16) -> Tensor:
    """The determinism contract: image i draws its own (1, C, h, w) from a CPU generator seeded seed + i."""
    shape = latent_shape(height, width, channels)
    return torch.cat([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(s), dtype=dtype)
                      for s in seeds])


def pack(x: Tensor) -> Tensor:
    # (B, C, h, w) -> (B, h/2 * w/2, C*4): each 2x2 patch becomes one token, channel-major
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: Tensor, height: int, width: int) -> Tensor:
    # (B, L, C*4) -> (B, C, h, w) for an image of height x width pixels
    b, _, c4 = x.shape
    h, w = height // 16, width // 16
    return x.view(b, h, w, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, c4 // 4, h * 2, w * 2)


def img_ids(height: int, width: int, t: int = 0) -> Tensor:
    # (h/2 * w/2, 3): (t, row, col) per packed token, row-major as pack() orders them; t=0 for the image being
    # generated, t=1 for an image to edit (Kontext): same rows and columns, told apart by RoPE's first axis
    h, w = height // 16, width // 16
    ids = torch.zeros(h, w, 3)
    ids[..., 0] = t
    ids[..., 1] = torch.arange(h)[:, None]
    ids[..., 2] = torch.arange(w)[None, :]
    return ids.reshape(h * w, 3)


def txt_ids(length: int) -> Tensor:
    return torch.zeros(length, 3)  # text tokens all sit at the origin: RoPE leaves them unrotated


@dataclass(frozen=True)
class Shift:
    """The scheduler_config.json fields that shape the schedule."""
    dynamic: bool = True             # shift by image size (dev); schnell uses a fixed shift of 1
    shift: float = 1.0               # the fixed shift when not dynamic
    base_shift: float = 0.5          # mu at base_seq_len tokens
    max_shift: float = 1.15          # mu at max_seq_len tokens
    base_seq_len: int = 256
    max_seq_len: int = 4096

    @classmethod
    def from_scheduler_config(cls, config: dict) -> Shift:
        return cls(dynamic=config.get("use_dynamic_shifting", False), shift=config.get("shift", 1.0),
                   base_shift=config.get("base_shift", 0.5), max_shift=config.get("max_shift", 1.15),
                   base_seq_len=config.get("base_image_seq_len", 256),
                   max_seq_len=config.get("max_image_seq_len", 4096))

    def mu(self, seq_len: int) -> float:
        # linear in the number of image tokens, through (base_seq_len, base_shift) and (max_seq_len, max_shift)
        m = (self.max_shift - self.base_shift) / (self.max_seq_len - self.base_seq_len)
        return seq_len * m + (self.base_shift - m * self.base_seq_len)


def get_schedule(num_steps: int, seq_len: int, shift: Shift) -> Tensor:
    """(num_steps + 1,) float32 sigmas from 1 down to 0; larger images spend longer at high noise."""
    t = np.linspace(1.0, 1 / num_steps, num_steps).astype(np.float32)
    if shift.dynamic:
        t = math.exp(shift.mu(seq_len)) / (math.exp(shift.mu(seq_len)) + (1 / t - 1) ** 1.0)
    else:
        t = shift.shift * t / (1 + (shift.shift - 1) * t)
    return torch.cat([torch.from_numpy(t).float(), torch.zeros(1)])


def predict(model: Flux, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, t: Tensor, vec: Tensor,
            guidance: Tensor | None, cond: Tensor | None = None, cond_ids: Tensor | None = None) -> Tensor:
    """The velocity of img's tokens (B, L, C*4). cond: (B, L_cond, C*4) packed latents of an image to edit
    (Kontext), at cond_ids (L_cond, 3): appended to the image tokens, clean, and the velocity taken over the
    image tokens only."""
    if cond is not None:
        return model(torch.cat((img, cond), dim=1), torch.cat((img_ids, cond_ids)), txt, txt_ids, t, vec,
                     guidance)[:, : img.shape[1]]
    return model(img, img_ids, txt, txt_ids, t, vec, guidance)


def denoise(model: Flux, img: Tensor, img_ids: Tensor, txt: Tensor, txt_ids: Tensor, vec: Tensor,
            sigmas: Tensor, guidance: float | None, before_step: Callable[[], None] = lambda: None,
            cond: Tensor | None = None, cond_ids: Tensor | None = None) -> Tensor:
    """Euler steps along the predicted velocity; img: (B, L, C*4) packed noise at sigma = 1.
    before_step() runs before each step and may raise to stop (a cancelled request). cond, cond_ids: an image
    to edit, appended at every step (predict)."""
    b = img.shape[0]
    guidance_vec = torch.full((b,), guidance, dtype=torch.float32, device=img.device) if guidance is not None else None
    sigmas = sigmas.to(img.device)
    timesteps = sigmas * 1000  # diffusers keeps "timesteps" in [0, 1000] and divides by 1000 again
    for i in range(len(sigmas) - 1):
        before_step()
        t = timesteps[i].expand(b).to(img.dtype) / 1000
        v = predict(model, img, img_ids, txt, txt_ids, t, vec, guidance_vec, cond, cond_ids)
        img = (img.float() + (sigmas[i + 1] - sigmas[i]) * v).to(v.dtype)  # the step in float32
    return img
