"""diffusers' FluxPipeline in process, from a preset or a user's FLUX directory."""
from __future__ import annotations

import time

import torch

from harness.target import check_request
from harness.types import GenerationRequest, GenerationResult
from targets.local import LocalTarget, seeds, to_uint8


class PipelineTarget(LocalTarget):
    name = "pipeline"

    pipe = None  # loaded by start()

    def start(self) -> None:
        from diffusers import FluxPipeline

        self.pipe = FluxPipeline.from_pretrained(self.path, dtype=self.dtype).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def close(self) -> None:
        self.pipe = None

    def run(self, request: GenerationRequest, output_type: str):
        """The pipeline's own output: "pt" images in [0, 1] or "latent" packed latents."""
        check_request(request, self.capabilities)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds(request)]  # one per image, on the CPU
        return self.pipe(prompt=request.prompt, num_images_per_prompt=request.num_images, height=request.height,
                         width=request.width, num_inference_steps=request.num_inference_steps,
                         guidance_scale=request.guidance_scale, generator=generators, output_type=output_type,
                         max_sequence_length=self.max_sequence_length).images

    def render(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        images = to_uint8(self.run(request, "pt"))
        return GenerationResult(images=images, timings={"pipeline": time.perf_counter() - start}, info=self.info())
