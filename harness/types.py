"""The target contract: what a request is, what a result is, and how a target fails."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str | list[str]
    height: int = 1024               # multiple of 16: 8x VAE, then 2x2 packing
    width: int = 1024
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    seed: int | None = 0             # image i of a request uses seed + i
    num_images: int = 1              # per prompt
    lora: str | None = None          # a LoRA the target offers (Target.loras()), applied for this request
    lora_scale: float = 1.0          # its strength: 0 leaves the model as it is
    # an image to edit (FLUX.1-Kontext): uint8 (H, W, 3) RGB, or bytes or a path (harness.images.pixels);
    # None: text to image. Not compared: an array has no single truth value (golden keys use its digest)
    image: Any = field(default=None, compare=False)
    image_fit: str = "preferred"     # the size the model sees it at (harness.images.FITS)

    @property
    def prompts(self) -> list[str]:
        """One prompt per image, prompt-major (as diffusers repeats them)."""
        prompts = [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)
        return [p for p in prompts for _ in range(self.num_images)]


@dataclass
class GenerationResult:
    images: np.ndarray               # uint8, (N, H, W, 3), RGB
    timings: dict[str, float] = field(default_factory=dict)  # seconds; the harness adds "total"
    info: dict[str, Any] = field(default_factory=dict)       # model, dtype, device, breakdowns


class TargetFailure(Exception):
    """Base of the errors every suite understands; a target translates its own into these."""


class InvalidRequest(TargetFailure, ValueError):
    """The caller's fault: a value breaks a rule (4xx, ValueError)."""


class Overloaded(TargetFailure):
    """The target refused for lack of capacity (429/503, queue full); retrying later may work."""


class TargetError(TargetFailure):
    """The target's fault (5xx, crash)."""


class Unavailable(TargetFailure):
    """The target cannot be reached or is not ready."""


class Cancelled(TargetFailure):
    """Nobody waits for the result any more (the client went away, the deadline passed): the work stopped
    early, between two denoising steps (harness.cancel)."""
