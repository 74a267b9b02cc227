"""Load a FLUX directory in the diffusers layout: our transformer, the text and VAE parts as published."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from targets.reference.model import Flux
from targets.reference.sampling import Shift
from targets.reference.weights import load_transformer

# scheduler options that change the sigmas in ways the reference sampler does not follow
UNSUPPORTED_SCHEDULE = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
                        "shift_terminal": None, "invert_sigmas": False, "stochastic_sampling": False,
                        "time_shift_type": "exponential"}


@dataclass
class Components:
    tokenizer: Any        # CLIP: pooled vector
    text_encoder: Any
    tokenizer_2: Any      # T5: per-token context
    text_encoder_2: Any
    transformer: Flux
    vae: Any              # diffusers AutoencoderKL
    shift: Shift


def load(path: Path, dtype: torch.dtype, device: torch.device, only: set[str] | None = None) -> Components:
    """Every component, or `only` those named (the others are None): a server that splits the pipeline into
    models loads in each only its part."""
    index = json.loads((path / "model_index.json").read_text())

    def published(name: str):
        if only is not None and name not in only:
            return None
        library, cls = index[name]
        loader = getattr(importlib.import_module(library), cls).from_pretrained
        if name.startswith("tokenizer"):
            return loader(path / name)
        return loader(path / name, dtype=dtype).to(device).eval().requires_grad_(False)

    scheduler = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    for key, default in UNSUPPORTED_SCHEDULE.items():
        if scheduler.get(key, default) != default:
            raise ValueError(f"scheduler {key}={scheduler[key]!r}: the reference sampler supports only {default!r}")
    return Components(
        tokenizer=published("tokenizer"), text_encoder=published("text_encoder"),
        tokenizer_2=published("tokenizer_2"), text_encoder_2=published("text_encoder_2"),
        transformer=load_transformer(path / "transformer", dtype, device) if only is None or "transformer" in only
        else None, vae=published("vae"),
        shift=Shift.from_scheduler_config(scheduler))
