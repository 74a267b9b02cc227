"""What the in-process targets share: their options, model resolution, seeds, image conversion."""
from __future__ import annotations

import json
import secrets
import threading
from pathlib import Path

import numpy as np
import torch

from harness import cancel
from harness.target import Capabilities, Target, check_request
from harness.types import GenerationRequest, GenerationResult, InvalidRequest, Overloaded

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


def kontext(path: Path) -> bool:
    """Whether the FLUX directory at `path` is a Kontext model (its model_index.json names FluxKontextPipeline),
    which edits an input image; False where there is no model_index.json to read."""
    index = path / "model_index.json"
    return index.is_file() and "Kontext" in json.loads(index.read_text()).get("_class_name", "")


def seeds(request: GenerationRequest) -> list[int]:
    """seed + i for image i; a request without a seed draws one at random."""
    base = secrets.randbelow(2**62) if request.seed is None else request.seed
    return [base + i for i in range(len(request.prompts))]


def truncated(tokenizer, prompts: list[str], limit: int) -> list[int]:
    """Which prompts `tokenizer` cuts at `limit` tokens, learnt by asking for one token more: at most limit + 1
    ids a prompt come back, not the whole prompt's. (The tokenizer still reads all of the text, which
    Capabilities.max_prompt_chars bounds before it gets here.)"""
    ids = tokenizer(prompts, truncation=True, max_length=limit + 1).input_ids
    return [i for i, t in enumerate(ids) if len(t) > limit]


def to_uint8(images: torch.Tensor) -> np.ndarray:
    # (N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8, rounded as diffusers rounds for PIL
    return (images.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype(np.uint8)


class LocalTarget(Target):
    """A FLUX in this process, from a preset (built on first use) or a diffusers-layout directory.

    It serves as a one-worker server would: one request runs at a time (a pipeline's scheduler holds
    state, so calls must not overlap), up to `max_queue` more wait, and beyond that a request is refused
    at once with Overloaded. So concurrency tests see queueing and load shedding, not a pile of threads.
    """

    components = False  # whether text encoders, transformer and VAE can be called one by one
    lora = False        # whether a request may name a LoRA from loras()

    def __init__(self, preset: str | None = None, model: str | None = None, dtype: str = "fp32",
                 device: str = "cpu", max_sequence_length: str | int = 512, max_queue: str | int = 4):
        if preset is None and model is None:
            preset = "tiny-dev"  # the embedded default
        self.path = resolve_model(preset, model)
        self.preset, self.model = preset, model
        self.dtype, self.device = parse_dtype(dtype), parse_device(device)
        self.max_sequence_length = int(max_sequence_length)
        if not 1 <= self.max_sequence_length <= 512:
            raise ValueError(f"max_sequence_length={max_sequence_length!r}: must be from 1 to 512 (T5's limit in FLUX)")
        self.max_queue = int(max_queue)
        if self.max_queue < 0:
            raise ValueError(f"max_queue={max_queue!r}: must be >= 0")
        guidance = json.loads((self.path / "transformer" / "config.json").read_text()).get("guidance_embeds", False)
        self.kontext = kontext(self.path)
        self.capabilities = Capabilities(components=self.components, local_gpu=self.device.type == "cuda",
                                         max_queue=self.max_queue, guidance=guidance, lora=self.lora,
                                         images=self.kontext)
        self._admitted = threading.BoundedSemaphore(1 + self.max_queue)  # running + waiting
        self._running = threading.Lock()

    def generate(self, request: GenerationRequest) -> GenerationResult:
        check_request(request, self.capabilities)  # a bad request takes no place in the queue
        if request.lora is not None:
            self.lora_path(request.lora)
        if not self._admitted.acquire(blocking=False):
            raise Overloaded(f"{self.name}: 1 request running and {self.max_queue} waiting; try again later")
        try:
            with self._running:
                cancel.check()  # given up on while it waited its turn: dropped before any work
                return self.render(request)
        finally:
            self._admitted.release()

    def render(self, request: GenerationRequest) -> GenerationResult:
        """Images for a checked, admitted request."""
        raise NotImplementedError

    def loras(self) -> list[str]:
        return sorted(p.stem for p in (self.path / "loras").glob("*.safetensors"))

    def lora_path(self, name: str) -> Path:
        if name not in self.loras():
            raise InvalidRequest(f"lora={name!r}: no such LoRA for this model (known: {', '.join(self.loras()) or 'none'})")
        return self.path / "loras" / f"{name}.safetensors"

    def weights(self) -> str:
        return f"preset={self.preset}" if self.preset else f"model={self.model}"

    def reference_spec(self) -> str:
        return (f"reference:{self.weights()},dtype={self.dtype_name},device={self.device}"
                f",max_sequence_length={self.max_sequence_length}")  # T5's length decides the pixels too

    @property
    def dtype_name(self) -> str:
        return next(k for k, v in DTYPES.items() if v == self.dtype)

    def info(self) -> dict:
        return {"model": self.preset or str(self.path), "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device)}

    def describe(self) -> dict:
        return {**super().describe(), **self.info(), "path": str(self.path)}
