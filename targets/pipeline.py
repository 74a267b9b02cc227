"""diffusers' FluxPipeline in process, from a preset or a user's FLUX directory."""
from __future__ import annotations

import time

import torch

from harness.target import Capabilities, Target, check_request
from harness.types import GenerationRequest, GenerationResult
from targets.local import parse_device, parse_dtype, resolve_model, seeds, to_uint8


class PipelineTarget(Target):
    name = "pipeline"

    def __init__(self, preset: str | None = None, model: str | None = None, dtype: str = "fp32",
                 device: str = "cpu", max_sequence_length: str | int = 512):
        if preset is None and model is None:
            preset = "tiny-dev"
        self.path = resolve_model(preset, model)
        self.preset = preset
        self.dtype, self.device = parse_dtype(dtype), parse_device(device)
        self.max_sequence_length = int(max_sequence_length)
        self.capabilities = Capabilities(local_gpu=self.device.type == "cuda")
        self.pipe = None

    def start(self) -> None:
        from diffusers import FluxPipeline

        self.pipe = FluxPipeline.from_pretrained(self.path, dtype=self.dtype).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)

    def close(self) -> None:
        self.pipe = None

    def run(self, request: GenerationRequest, output_type: str):
        """The pipeline's own output for a checked request: "pt" images in [0, 1] or "latent" packed latents."""
        check_request(request, self.capabilities)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds(request)]  # one per image, on the CPU
        return self.pipe(prompt=request.prompt, num_images_per_prompt=request.num_images, height=request.height,
                         width=request.width, num_inference_steps=request.num_inference_steps,
                         guidance_scale=request.guidance_scale, generator=generators, output_type=output_type,
                         max_sequence_length=self.max_sequence_length).images

    def generate(self, request: GenerationRequest) -> GenerationResult:
        start = time.perf_counter()
        images = to_uint8(self.run(request, "pt"))
        info = {"model": self.preset or str(self.path), "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device)}
        return GenerationResult(images=images, timings={"pipeline": time.perf_counter() - start}, info=info)
