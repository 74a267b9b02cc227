"""The models of the Triton repository, run by Triton's python backend (`triton_python_backend_utils` exists
only there). Each component wraps the reference's own method for its part, so Triton computes what the
reference computes; `Pipeline` is the BLS model that runs FLUX through them.

Tensors cross the wire as FP32 (numpy has no bfloat16); each side casts to the model's dtype, which loses
nothing for fp32, bf16 or fp16 values.
"""
from __future__ import annotations

import json

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from harness import images
from harness.target import check_request
from harness.types import InvalidRequest
from targets.local import seeds
from targets.reference import sampling
from targets.reference.load import load
from targets.reference.target import ReferenceTarget
from targets.triton.wire import INPUTS, request_of


def wire(x: torch.Tensor) -> np.ndarray:
    return x.float().cpu().contiguous().numpy()  # C order, as a Triton tensor is laid out: a slice may not be


class Model:
    """One component: `parts` names what it loads; `run(inputs) -> outputs` works on one request."""

    parts: set[str] = set()

    def initialize(self, args):
        params = {k: v["string_value"] for k, v in json.loads(args["model_config"])["parameters"].items()}
        self.ref = ReferenceTarget(model=params["model_dir"], dtype=params["dtype"], device=params["device"],
                                   max_sequence_length=params["max_sequence_length"])
        self.ref.parts = load(self.ref.path, self.ref.dtype, self.ref.device, only=self.parts)

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outputs = self.run(request)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in outputs.items()]))
            except InvalidRequest as e:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(str(e), pb_utils.TritonError.INVALID_ARG)))
            except Exception as e:  # the model's fault: say what, keep serving
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"{type(e).__name__}: {e}", pb_utils.TritonError.INTERNAL)))
        return responses

    def run(self, request) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def tensor(self, request, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.from_numpy(array(request, name).copy()).to(self.ref.device, dtype or self.ref.dtype)


def array(request, name: str) -> np.ndarray | None:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


def prompts_of(request) -> list[str]:
    return [p.decode("utf-8", errors="replace") for p in array(request, "prompt").reshape(-1)]


def size_of(request, prefix: str = "") -> tuple[int, int]:
    return int(array(request, f"{prefix}height")[0]), int(array(request, f"{prefix}width")[0])


class ClipEncoder(Model):
    parts = {"tokenizer", "text_encoder"}

    def run(self, request):
        vec, truncated = self.ref.clip(prompts_of(request))
        return {"pooled": wire(vec), "truncated": np.array(truncated, np.int32)}


class T5Encoder(Model):
    parts = {"tokenizer_2", "text_encoder_2"}

    def run(self, request):
        txt, truncated = self.ref.t5(prompts_of(request))
        return {"context": wire(txt), "truncated": np.array(truncated, np.int32)}


class VaeEncoder(Model):
    parts = {"vae"}

    def run(self, request):
        return {"latents": wire(self.ref.encode_image(array(request, "image")))}


class Transformer(Model):
    """The velocity of the image tokens; with an image to edit (cond), its tokens appended at t=1, as the
    reference appends them (sampling.predict)."""

    parts = {"transformer"}

    def run(self, request):
        img, txt, vec, t = (self.tensor(request, n) for n in ("img", "txt", "vec", "timestep"))
        g = self.tensor(request, "guidance", torch.float32)
        on = {"device": self.ref.device, "dtype": self.ref.dtype}
        cond = cond_ids = None
        if array(request, "cond") is not None:
            cond = self.tensor(request, "cond").expand(img.shape[0], -1, -1)  # one input for every image
            cond_ids = sampling.img_ids(*size_of(request, "cond_"), t=1).to(**on)
        with torch.inference_mode():
            v = sampling.predict(self.ref.parts.transformer, img, sampling.img_ids(*size_of(request)).to(**on), txt,
                                 sampling.txt_ids(txt.shape[1]).to(**on), t, vec,
                                 g if self.ref.parts.transformer.params.guidance_embed else None, cond, cond_ids)
        return {"velocity": wire(v)}


class VaeDecoder(Model):
    parts = {"vae"}

    def run(self, request):
        height, width = size_of(request)
        return {"images": wire(self.ref.decode(self.tensor(request, "latents"), height, width))}


class Pipeline(Model):
    """BLS: checks the request, draws the noise, and runs the encoders (the VAE's for an image to edit), the
    transformer once per step, and the decoder as Triton models."""

    def initialize(self, args):
        super().initialize(args)
        self.shift = sampling.Shift.from_scheduler_config(
            json.loads((self.ref.path / "scheduler" / "scheduler_config.json").read_text()))

    def call(self, model: str, outputs: list[str], **inputs: np.ndarray) -> list[np.ndarray]:
        tensors = [pb_utils.Tensor(k, v) for k, v in inputs.items()]
        response = pb_utils.InferenceRequest(model_name=model, requested_output_names=outputs, inputs=tensors).exec()
        if response.has_error():
            raise RuntimeError(f"{model}: {response.error().message()}")
        return [pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in outputs]

    def run(self, request):
        req = request_of({name: array(request, name) for name in INPUTS})
        check_request(req, self.ref.capabilities)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        encoded = np.array([p.encode() for p in prompts], dtype=np.object_)
        dtype, device = self.ref.dtype, self.ref.device
        vec, clipped = self.call("clip_encoder", ["pooled", "truncated"], prompt=encoded)
        txt, truncated = self.call("t5_encoder", ["context", "truncated"], prompt=encoded)
        # one row per prompt, repeated per image, as the reference does
        txt, vec = (torch.from_numpy(x).to(device, dtype).repeat_interleave(req.num_images, 0) for x in (txt, vec))
        h, w, n = req.height, req.width, len(req.prompts)
        size = {"height": np.array([h], np.int32), "width": np.array([w], np.int32)}

        img = sampling.pack(sampling.get_noise(seeds(req), h, w, dtype).to(device))
        # an image to edit goes with every transformer call, which appends it to the image tokens as
        # sampling.denoise would: denoise here steps the image tokens alone
        cond = self.conditioning(req)

        def velocity(img, img_ids, txt, txt_ids, t, vec, guidance):
            g = np.full([n], req.guidance_scale, np.float32)
            v, = self.call("transformer", ["velocity"], img=wire(img), txt=wire(txt), vec=wire(vec), timestep=wire(t),
                           guidance=g, **size, **cond)
            return torch.from_numpy(v).to(device, dtype)

        sigmas = sampling.get_schedule(req.num_inference_steps, img.shape[1], self.shift)
        latents = sampling.denoise(velocity, img, None, txt, None, vec, sigmas, req.guidance_scale)
        decoded, = self.call("vae_decoder", ["images"], latents=wire(latents), **size)
        return {"images": decoded, "truncated": np.unique(np.concatenate([clipped, truncated])).astype(np.int32)}

    def conditioning(self, req) -> dict[str, np.ndarray]:
        """The transformer's inputs for the image to edit: its packed latents, once (the transformer gives them to
        every image of the batch), and its size; none for text to image."""
        if req.image is None:
            return {}
        source = images.source(req, self.ref.capabilities.max_image_side)
        latents, = self.call("vae_encoder", ["latents"], image=source)
        cond = sampling.pack(torch.from_numpy(latents.copy()))
        height, width = source.shape[:2]
        return {"cond": wire(cond), "cond_height": np.array([height], np.int32),
                "cond_width": np.array([width], np.int32)}
