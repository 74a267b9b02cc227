"""What the in-process targets share: options from SPEC strings, model resolution, seeds, image conversion."""
from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np
import torch

from harness.types import GenerationRequest

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"dtype={name!r}: must be one of {', '.join(DTYPES)}")
    return DTYPES[name]


def parse_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r}: CUDA is not available on this host")
    return torch.device(name)


def resolve_model(preset: str | None, model: str | None) -> Path:
    """A diffusers-layout directory: a preset (built on first use) or a user's path."""
    from targets.reference import presets

    if (preset is None) == (model is None):
        raise ValueError(f"preset={preset!r}, model={model!r}: give exactly one of them")
    if preset is not None:
        return presets.ensure(preset)
    path = Path(model).expanduser()
    if not (path / "model_index.json").is_file():
        raise FileNotFoundError(f"model={model!r}: no model_index.json there (a diffusers FLUX directory is needed)")
    return path


def seeds(request: GenerationRequest) -> list[int]:
    """seed + i for image i; a request without a seed draws one at random."""
    base = secrets.randbelow(2**62) if request.seed is None else request.seed
    return [base + i for i in range(len(request.prompts))]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    # (N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, rounded as diffusers rounds for PIL
    return (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)
