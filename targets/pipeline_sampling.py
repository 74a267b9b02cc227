"""Noise, latent packing, position ids and the shifted schedule, each through diffusers' own code.

The pipeline target's counterpart of targets/reference/sampling.py, with the same signatures, so the unit
suite checks diffusers' pieces (FluxPipeline's static methods, randn_tensor, the flow-matching scheduler)
and not ours.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
from diffusers.configuration_utils import FrozenDict
from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
from diffusers.utils.torch_utils import randn_tensor
from torch import Tensor

VAE_SCALE = 8  # FLUX's VAE downsamples 8x; FluxPipeline reads it from the VAE as vae_scale_factor


def get_noise(seeds: list[int], height: int, width: int, dtype: torch.dtype, channels: int = 16) -> Tensor:
    """(B, C, 2*(H//16), 2*(W//16)): image i drawn from its own CPU generator seeded seeds[i], as
    FluxPipeline.prepare_latents draws a batch from a list of generators."""
    shape = (len(seeds), channels, 2 * (height // (VAE_SCALE * 2)), 2 * (width // (VAE_SCALE * 2)))
    return randn_tensor(shape, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], dtype=dtype)


def pack(x: Tensor) -> Tensor:
    # (B, C, h, w) -> (B, h/2 * w/2, C*4)
    b, c, h, w = x.shape
    return FluxPipeline._pack_latents(x, b, c, h, w)


def unpack(packed: Tensor, height: int, width: int) -> Tensor:
    # (B, L, C*4) -> (B, C, h, w) for an image of height x width pixels
    return FluxPipeline._unpack_latents(packed, height, width, VAE_SCALE)


def img_ids(height: int, width: int, t: int = 0) -> Tensor:
    # (h/2 * w/2, 3) float32 on the CPU: (t, row, col) per packed token; t=1 for an image to edit, set as
    # FluxKontextPipeline.prepare_latents sets it
    ids = FluxPipeline._prepare_latent_image_ids(1, height // (VAE_SCALE * 2), width // (VAE_SCALE * 2), "cpu",
                                                 torch.float32)
    ids[..., 0] = t
    return ids


@dataclass(frozen=True)
class Shift:
    """A scheduler's config: it decides how the schedule shifts with the image size."""
    config: FrozenDict

    @property
    def dynamic(self) -> bool:
        return bool(self.config.get("use_dynamic_shifting", False))  # dev shifts by image size; schnell does not


def get_schedule(num_steps: int, image_seq_len: int, shift: Shift) -> Tensor:
    """(num_steps + 1,) float32 sigmas from 1 down to 0, set as FluxPipeline sets them, on a scheduler of our
    own made from the config (the pipeline's scheduler keeps its state)."""
    config = shift.config
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    sigmas = None if config.get("use_flow_sigmas") else np.linspace(1.0, 1 / num_steps, num_steps)
    mu = calculate_shift(image_seq_len, config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096),
                         config.get("base_shift", 0.5), config.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, num_steps, sigmas=sigmas, mu=mu)
    return scheduler.sigmas
