"""The reference target: our FLUX, in process. Every other target is compared with it."""
from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor

from harness import cancel, images
from harness.types import GenerationRequest, GenerationResult, InvalidRequest
from targets.local import LocalTarget, seeds, to_uint8, truncated
from targets.reference import sampling
from targets.reference.load import Components, load
from targets.reference.sampling import denoise, get_noise, get_schedule, img_ids, pack, txt_ids, unpack
from targets.reference.weights import from_diffusers, lora_deltas, to_diffusers


class ReferenceTarget(LocalTarget):
    name = "reference"
    components = True
    lora = True

    parts: Components | None = None  # loaded by start()
    sampling = sampling                # the pure functions, for the unit suite: pack, unpack, img_ids, get_schedule

    def start(self) -> None:
        self.parts = load(self.path, self.dtype, self.device)

    @property
    def shift(self) -> sampling.Shift:
        """The scheduler's time shift (from scheduler_config.json)."""
        return self.parts.shift

    def close(self) -> None:
        self.parts = None

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, list[int]]:
        """T5 context (B, L, d), CLIP pooled vector (B, d), and which prompts were truncated."""
        vec, clipped = self.clip(prompts)
        txt, truncated = self.t5(prompts)
        return txt, vec, sorted(set(clipped + truncated))

    def tokens(self, tokenizer, prompts: list[str], limit: int) -> tuple[Tensor, list[int]]:
        """Token ids (B, limit), padded and cut, and which prompts were cut."""
        ids = tokenizer(prompts, padding="max_length", max_length=limit, truncation=True, return_tensors="pt")
        return ids.input_ids.to(self.device), truncated(tokenizer, prompts, limit)

    @torch.inference_mode()
    def clip(self, prompts: list[str]) -> tuple[Tensor, list[int]]:
        """CLIP's pooled vector (B, d), and which prompts were truncated."""
        tokens, truncated = self.tokens(self.parts.tokenizer, prompts, self.parts.tokenizer.model_max_length)
        return self.parts.text_encoder(tokens, output_hidden_states=False).pooler_output.to(self.dtype), truncated

    @torch.inference_mode()
    def t5(self, prompts: list[str]) -> tuple[Tensor, list[int]]:
        """T5's context (B, L, d), and which prompts were truncated."""
        tokens, truncated = self.tokens(self.parts.tokenizer_2, prompts, self.max_sequence_length)
        return self.parts.text_encoder_2(tokens, output_hidden_states=False)[0].to(self.dtype), truncated

    @torch.inference_mode()
    def sample(self, request: GenerationRequest, txt: Tensor, vec: Tensor) -> Tensor:
        """Packed latents (B, L, 64) after the last step; txt and vec hold one row per prompt."""
        n, h, w = request.num_images, request.height, request.width
        txt, vec = txt.repeat_interleave(n, dim=0), vec.repeat_interleave(n, dim=0)
        img = pack(get_noise(seeds(request), h, w, self.dtype).to(self.device))
        sigmas = get_schedule(request.num_inference_steps, img.shape[1], self.parts.shift)
        guidance = request.guidance_scale if self.parts.transformer.params.guidance_embed else None
        cond = cond_ids = None
        if request.image is not None:  # Kontext: the image to edit, encoded once for every image of the batch
            source = images.source(request, self.capabilities.max_image_side)
            cond = pack(self.encode_image(source)).expand(img.shape[0], -1, -1)
            cond_ids = img_ids(*source.shape[:2], t=1).to(self.device, self.dtype)
        return denoise(self.parts.transformer, img, img_ids(h, w).to(self.device, self.dtype),
                       txt, txt_ids(txt.shape[1]).to(self.device, self.dtype), vec, sigmas, guidance, cancel.check,
                       cond, cond_ids)

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> the VAE's latents (1, 16, H/8, W/8), scaled as the transformer sees latents: the
        mode of the encoder's distribution, not a sample, so an edit depends on its seed only through the noise."""
        vae = self.parts.vae
        # (1, 3, H, W) in [-1, 1], laid out channels-last as the image is: convolutions take another path for
        # another layout, which rounds otherwise (diffusers' preprocessing keeps this layout too)
        x = torch.from_numpy(image[None].astype(np.float32) / 255).permute(0, 3, 1, 2) * 2 - 1
        z = vae.encode(x.to(self.device, self.dtype)).latent_dist.mode()
        return (z - vae.config.shift_factor) * vae.config.scaling_factor

    @torch.inference_mode()
    def velocity(self, img: Tensor, txt: Tensor, vec: Tensor, sigma: float, guidance: float, height: int,
                 width: int) -> Tensor:
        """One transformer call: the predicted velocity (B, L, 64) for packed latents at noise level sigma."""
        b = img.shape[0]
        g = torch.full((b,), guidance, device=self.device) if self.parts.transformer.params.guidance_embed else None
        return self.parts.transformer(img, img_ids(height, width).to(self.device, self.dtype), txt,
                                      txt_ids(txt.shape[1]).to(self.device, self.dtype),
                                      torch.full((b,), sigma, device=self.device), vec, g)

    @torch.inference_mode()
    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Packed latents -> images (B, 3, H, W) in [0, 1]."""
        vae = self.parts.vae
        x = unpack(latents, height, width) / vae.config.scaling_factor + vae.config.shift_factor
        return (vae.decode(x, return_dict=False)[0] * 0.5 + 0.5).clamp(0, 1)

    @contextmanager
    def lora_applied(self, name: str | None, scale: float):
        """The transformer with the LoRA merged in, for one request; the original weights after."""
        if name is None:
            yield
            return
        model, params = self.parts.transformer, self.parts.transformer.params
        original = {k: v.clone() for k, v in model.state_dict().items()}
        theirs = to_diffusers(original, params)
        for key, delta in lora_deltas(load_file(self.lora_path(name)), scale).items():
            if key not in theirs or theirs[key].shape != delta.shape:
                raise InvalidRequest(f"lora={name!r}: {key} {tuple(delta.shape)} does not fit this model")
            theirs[key] = (theirs[key].float() + delta).to(theirs[key].dtype)
        model.load_state_dict(from_diffusers(theirs, params))
        try:
            yield
        finally:
            model.load_state_dict(original)

    def render(self, request: GenerationRequest) -> GenerationResult:
        with self.lora_applied(request.lora, request.lora_scale):
            return self.render_plain(request)

    def render_plain(self, request: GenerationRequest) -> GenerationResult:
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        clock = [time.perf_counter()]

        def lap():
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            clock.append(time.perf_counter())
            return clock[-1] - clock[-2]

        txt, vec, truncated = self.encode(prompts)
        timings = {"encode": lap()}
        latents = self.sample(request, txt, vec)
        timings["denoise"] = lap()
        cancel.check()  # decoding is a step's worth of work too
        images = to_uint8(self.decode(latents, request.height, request.width))
        timings["decode"] = lap()
        return GenerationResult(images=images, timings=timings, info={**self.info(), "truncated_prompts": truncated})
