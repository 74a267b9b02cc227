"""The Triton target: FLUX on a Triton Inference Server, `triton://host:port?model=flux&protocol=http|grpc`.

generate() calls the BLS model, with the image to edit as its RGB pixels; encode(), encode_image(), velocity()
and decode() call the component models one by one, so the unit suite tests each on its own. Triton's statistics
(queue and compute time of the BLS model) are read before and after each request and recorded beside the
client's timings. tritonclient's errors become the contract's: a bad input InvalidRequest, a model or server
that is not there Unavailable, the rest TargetError.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import torch

from harness.target import Capabilities, Target, check_request
from harness.types import GenerationRequest, GenerationResult, InvalidRequest, TargetError, Unavailable
from targets.local import kontext
from targets.reference import sampling
from targets.triton.wire import INPUTS, inputs_of

STATS = ("queue", "compute_input", "compute_infer", "compute_output")


class TritonTarget(Target):
    name = "triton"
    sampling = sampling            # the pure functions the unit suite checks: the client draws no noise itself
    dtype = torch.float32          # what crosses the wire, whatever the model computes in

    def __init__(self, url: str, model: str = "flux", protocol: str = "http", reference: str | None = None,
                 timeout: str | float = 600.0):
        if protocol not in ("http", "grpc"):
            raise ValueError(f"protocol={protocol!r}: must be http or grpc")
        self.address = url.split("://", 1)[-1].rstrip("/")
        self.model, self.protocol, self.reference = model, protocol, reference
        self.timeout = float(timeout)
        self.local = threading.local()  # a client per thread (tritonclient.http's gevent pool is not
                                        # thread-safe), dropped with its thread
        self.params: dict[str, str] = {}
        self.device = torch.device("cpu")   # where the client's tensors live
        self.capabilities = Capabilities(components=True, remote=True)

    @property
    def lib(self):
        return importlib.import_module(f"tritonclient.{self.protocol}")

    @property
    def client(self):
        if getattr(self.local, "client", None) is None:
            self.local.client = self.lib.InferenceServerClient(self.address, network_timeout=self.timeout) \
                if self.protocol == "http" else self.lib.InferenceServerClient(self.address)
        return self.local.client

    def start(self) -> None:
        try:
            live = self.client.is_server_live()
        except Exception as e:  # connection refused comes as whatever the transport raises
            raise Unavailable(f"Triton at {self.address} ({self.protocol}): cannot connect: {e}") from None
        if not live:
            raise Unavailable(f"Triton at {self.address} is not live")
        for model in ("flux", "clip_encoder", "t5_encoder", "vae_encoder", "transformer", "vae_decoder"):
            name = self.model if model == "flux" else model
            if not self.client.is_model_ready(name):
                raise Unavailable(f"Triton model {name!r} is not ready: {self.reason(name)}")
        config = self.client.get_model_config(self.model)
        config = config.get("config", config) if isinstance(config, dict) else json.loads(
            self.lib_json(config))["config"]
        self.params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.max_sequence_length = int(self.params.get("max_sequence_length", 512))
        scheduler = json.loads((self.weights() / "scheduler" / "scheduler_config.json").read_text()) \
            if self.weights().is_dir() else {}
        self.shift = sampling.Shift.from_scheduler_config(scheduler)
        transformer = self.weights() / "transformer" / "config.json"
        guidance = json.loads(transformer.read_text()).get("guidance_embeds", True) if transformer.is_file() else True
        # weights this host cannot read are taken for text to image, which any FLUX does
        self.capabilities = dataclasses.replace(self.capabilities, guidance=guidance, images=kontext(self.weights()))

    def lib_json(self, message) -> str:
        from google.protobuf import json_format

        return json_format.MessageToJson(message, preserving_proto_field_name=True)

    def weights(self) -> Path:
        """The weights directory the server was given (a path on the server's host)."""
        return Path(self.params.get("model_dir", "/nonexistent"))

    def reason(self, name: str) -> str:
        """Why Triton says a model is not ready, from its repository index."""
        try:
            index = self.client.get_model_repository_index()
        except Exception as e:
            return f"(no repository index: {e})"
        entries = index if isinstance(index, list) else json.loads(self.lib_json(index)).get("models", [])
        entry = next((m for m in entries if m.get("name") == name), None)
        return "not in the repository" if entry is None else f"{entry.get('state')}: {entry.get('reason', '')}"

    def infer(self, model: str, arrays: dict[str, np.ndarray], outputs: list[str]) -> list[np.ndarray]:
        kinds = {np.dtype(np.float32): "FP32", np.dtype(np.int32): "INT32", np.dtype(np.int64): "INT64",
                 np.dtype(np.uint8): "UINT8"}
        inputs = []
        for name, array in arrays.items():
            kind = INPUTS[name].kind if model == self.model else kinds.get(array.dtype, "BYTES")
            tensor = self.lib.InferInput(name, list(array.shape), kind)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        wanted = [self.lib.InferRequestedOutput(name) for name in outputs]
        try:
            timeout = {} if self.protocol == "http" else {"client_timeout": self.timeout}
            result = self.client.infer(model, inputs, outputs=wanted, **timeout)
        except Exception as e:
            raise self.translate(model, e) from None
        return [result.as_numpy(name) for name in outputs]

    def translate(self, model: str, error: Exception) -> Exception:
        message = getattr(error, "message", lambda: str(error))() or str(error)
        status = str(getattr(error, "status", lambda: "")() or "")
        if "400" in status or "INVALID_ARG" in status:
            return InvalidRequest(f"{message} (Triton {model}: {status})")
        if "UNAVAILABLE" in status or "not ready" in message or "unknown model" in message.lower() \
                or "connect" in message.lower():
            return Unavailable(f"Triton {model} at {self.address}: {message}")
        return TargetError(f"Triton {model}: {status} {message}".strip())

    def statistics(self) -> dict[str, float]:
        """Cumulative seconds per stage of the BLS model, as Triton counts them."""
        try:
            stats = self.client.get_inference_statistics(self.model)
        except Exception as e:
            raise self.translate(self.model, e) from None
        stats = stats if isinstance(stats, dict) else json.loads(self.lib_json(stats))
        inference = stats["model_stats"][0]["inference_stats"]
        return {k: int(inference.get(k, {}).get("ns", 0)) / 1e9 for k in STATS}

    def generate(self, request: GenerationRequest) -> GenerationResult:
        check_request(request, self.capabilities, ranges=False)  # the ranges are the server's to judge
        # a seed of None is left out (the server draws one); an image's sides are bounded as the server's are
        arrays = inputs_of(request, self.capabilities.max_image_side)
        before = self.statistics()
        sent = time.perf_counter()
        images, truncated = self.infer(self.model, arrays, ["images", "truncated"])
        timings = {"infer": time.perf_counter() - sent}
        after = self.statistics()
        timings |= {f"server.{k}": after[k] - before[k] for k in STATS}  # this request's share, when alone
        if self.first_call is None:
            self.first_call = (request, timings["infer"])
        images = (images.transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)  # as the reference rounds
        return GenerationResult(images, timings, {"model": self.model, "truncated_prompts": truncated.tolist(),
                                                  "protocol": self.protocol})

    # the components, one Triton model each, as the reference exposes them
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        encoded = {"prompt": np.array([p.encode() for p in prompts], dtype=np.object_)}
        vec, clipped = self.infer("clip_encoder", encoded, ["pooled", "truncated"])
        txt, truncated = self.infer("t5_encoder", encoded, ["context", "truncated"])
        cut = sorted(set(clipped.tolist() + truncated.tolist()))
        return torch.from_numpy(txt.copy()), torch.from_numpy(vec.copy()), cut

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8, at the size the model sees it -> the VAE's latents (1, 16, H/8, W/8)."""
        latents, = self.infer("vae_encoder", {"image": image}, ["latents"])
        return torch.from_numpy(latents.copy())

    def velocity(self, img, txt, vec, sigma: float, guidance: float, height: int, width: int) -> torch.Tensor:
        b = img.shape[0]
        v, = self.infer("transformer", {"img": img.float().numpy(), "txt": txt.float().numpy(),
                                        "vec": vec.float().numpy(), "timestep": np.full([b], sigma, np.float32),
                                        "guidance": np.full([b], guidance, np.float32),
                                        "height": np.array([height], np.int32), "width": np.array([width], np.int32)},
                        ["velocity"])
        return torch.from_numpy(v.copy())

    def decode(self, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
        images, = self.infer("vae_decoder", {"latents": latents.float().numpy(), "height": np.array([height], np.int32),
                                             "width": np.array([width], np.int32)}, ["images"])
        return torch.from_numpy(images.copy())

    def reference_spec(self) -> str | None:
        if self.reference:
            return self.reference
        weights = self.weights()
        if not weights.is_dir():
            return None
        dtype, device = self.params.get("dtype", "fp32"), self.params.get("device", "cpu")
        return f"reference:model={weights},dtype={dtype},device={device}"

    def describe(self) -> dict:
        return {**super().describe(), "address": self.address, "model": self.model, "protocol": self.protocol,
                "parameters": self.params}

    def close(self) -> None:
        if getattr(self.local, "client", None) is not None:
            self.local.client.close()
        self.local = threading.local()  # the other threads' clients go with their threads
