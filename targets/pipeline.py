"""diffusers' FluxPipeline in process (FluxKontextPipeline for a Kontext model), from a preset or a user's FLUX
directory.

Its components (text encoders, one transformer call, the VAE decoder, the sampling pieces) are exposed with
the reference's signatures and called the way FluxPipeline calls them, so the unit suite tests diffusers'
pieces one by one. LoRAs load through diffusers' own loader (PEFT), once each, and are switched on for the
requests that name them.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from harness import cancel, images
from harness.target import check_request
from harness.types import GenerationRequest, GenerationResult
from targets.local import LocalTarget, seeds, to_uint8, truncated

if TYPE_CHECKING:
    from targets.pipeline_sampling import Shift


class PipelineTarget(LocalTarget):
    name = "pipeline"
    components = True
    lora = True

    pipe = None  # loaded by start()

    def start(self) -> None:
        from diffusers import FluxKontextPipeline, FluxPipeline

        pipeline = FluxKontextPipeline if self.kontext else FluxPipeline
        self.pipe = pipeline.from_pretrained(self.path, dtype=self.dtype).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def close(self) -> None:
        self.pipe = None

    @property
    def sampling(self) -> ModuleType:
        """The pure functions, for the unit suite: get_noise, pack, unpack, img_ids, get_schedule (imported
        here, as diffusers is: choosing the target must not import it)."""
        from targets import pipeline_sampling

        return pipeline_sampling

    @property
    def shift(self) -> Shift:
        """The scheduler's time shift (its config)."""
        return self.sampling.Shift(self.pipe.scheduler.config)

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor, list[int]]:
        """T5 context (B, L, d), CLIP pooled vector (B, d), and which prompts were truncated."""
        txt, vec, _ = self.pipe.encode_prompt(prompts, device=self.device, max_sequence_length=self.max_sequence_length)
        return txt, vec, self.truncated(prompts)

    def truncated(self, prompts: list[str]) -> list[int]:
        """Which prompts a tokenizer cuts: CLIP at its 77 tokens, T5 at max_sequence_length."""
        limits = [(self.pipe.tokenizer, self.pipe.tokenizer_max_length), (self.pipe.tokenizer_2, self.max_sequence_length)]
        return sorted({i for tokenizer, limit in limits for i in truncated(tokenizer, prompts, limit)})

    @torch.inference_mode()
    def velocity(self, img: Tensor, txt: Tensor, vec: Tensor, sigma: float, guidance: float, height: int,
                 width: int) -> Tensor:
        """One transformer call, as FluxPipeline makes it: the predicted velocity (B, L, 64) for packed latents
        at noise level sigma."""
        pipe, b = self.pipe, img.shape[0]
        scale = pipe.vae_scale_factor * 2  # pixels per packed token side
        img_ids = pipe._prepare_latent_image_ids(b, height // scale, width // scale, self.device, self.dtype)  # (L, 3)
        txt_ids = torch.zeros(txt.shape[1], 3, device=self.device, dtype=self.dtype)  # as encode_prompt makes them
        # the pipeline keeps the scheduler's timestep (sigma * 1000) in the latents' dtype and passes it / 1000
        timestep = torch.full((b,), sigma * 1000, device=self.device).to(img.dtype) / 1000
        g = torch.full((b,), guidance, device=self.device) if pipe.transformer.config.guidance_embeds else None
        return pipe.transformer(hidden_states=img, timestep=timestep, guidance=g, pooled_projections=vec,
                                encoder_hidden_states=txt, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]

    @torch.inference_mode()
    def decode(self, latents: Tensor, height: int, width: int) -> Tensor:
        """Packed latents (B, L, 64) -> images (B, 3, H, W) in [0, 1], as FluxPipeline decodes."""
        pipe, vae = self.pipe, self.pipe.vae
        x = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)  # (B, 16, H/8, W/8)
        x = x / vae.config.scaling_factor + vae.config.shift_factor
        return pipe.image_processor.postprocess(vae.decode(x, return_dict=False)[0], output_type="pt")

    @torch.inference_mode()
    def encode_image(self, image: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 -> the VAE's latents (1, 16, H/8, W/8), as FluxKontextPipeline prepares and encodes
        its input (at the image's own size: the caller has fitted it)."""
        pipe = self.pipe
        x = pipe.image_processor.preprocess(Image.fromarray(image), *image.shape[:2])  # (1, 3, H, W) in [-1, 1]
        return pipe._encode_vae_image(x.to(self.device, self.dtype), generator=None)

    def edit(self, request: GenerationRequest) -> dict:
        """FluxKontextPipeline's arguments beyond FluxPipeline's: the image to edit and how it is sized, and
        max_area, which it would otherwise use to resize the output to about 1 MP whatever the request said."""
        if not self.kontext:
            return {}
        area = {"max_area": request.height * request.width}
        if request.image is None:
            return area
        if request.image_fit == "preferred":  # diffusers' own choice of size, so the reference's is checked
            image = images.pixels(request.image, self.capabilities.max_image_side)
        else:                                 # no such option in diffusers: fitted here, then taken as it is
            image = images.source(request, self.capabilities.max_image_side)
        return {**area, "image": Image.fromarray(image), "_auto_resize": request.image_fit == "preferred"}

    @contextmanager
    def lora_applied(self, name: str | None, scale: float):
        """The LoRA active at `scale` for one request, loaded on its first use and kept; the plain model after."""
        if name is None:
            yield
            return
        if name not in self.pipe.get_list_adapters().get("transformer", []):
            self.pipe.load_lora_weights(self.lora_path(name), adapter_name=name)
        self.pipe.set_adapters([name], [scale])
        self.pipe.enable_lora()  # set_adapters picks the adapter but does not undo the last request's disable_lora()
        try:
            yield
        finally:
            self.pipe.disable_lora()

    def run(self, request: GenerationRequest, output_type: str):
        """The pipeline's own output: "pt" images in [0, 1] or "latent" packed latents."""
        check_request(request, self.capabilities)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds(request)]  # one per image, on the CPU
        with self.lora_applied(request.lora, request.lora_scale):
            return self.pipe(prompt=request.prompt, num_images_per_prompt=request.num_images, height=request.height,
                             width=request.width, num_inference_steps=request.num_inference_steps,
                             guidance_scale=request.guidance_scale, generator=generators, output_type=output_type,
                             max_sequence_length=self.max_sequence_length, callback_on_step_end=_check_cancel,
                             **self.edit(request)).images

    def render(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        images = to_uint8(self.run(request, "pt"))
        timings = {"pipeline": time.perf_counter() - start}
        truncated = self.truncated([request.prompt] if isinstance(request.prompt, str) else list(request.prompt))
        return GenerationResult(images=images, timings=timings, info={**self.info(), "truncated_prompts": truncated})


def _check_cancel(pipe, step: int, timestep, tensors: dict) -> dict:
    """FluxPipeline's step-end callback: a cancelled request stops here (it must hand the tensors back)."""
    cancel.check()
    return tensors
