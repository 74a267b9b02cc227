"""The HTTP target: a text-to-image service over HTTP, in one of three protocols.

    openai   POST /v1/images/generations: prompt, n, size "WxH", b64_json; seed, num_inference_steps,
             guidance_scale (and lora, lora_scale) as extension fields. An edit: POST /v1/images/edits,
             multipart, the image a file part and the rest form fields
    a1111    POST /sdapi/v1/txt2img, as AUTOMATIC1111's web UI and its clones (Forge) serve it; an edit:
             /sdapi/v1/img2img with the image base64 in init_images
    raw      POST /generate (or `path`): the request's fields as JSON in, image bytes out, one image a call,
             the shape of a Modal endpoint such as /flux-dev; an edit adds the image base64 as "image"

An edit's image goes as the bytes it was given, or an array as lossless PNG; image_fit goes as a field.

A request the protocol cannot carry in one call (several prompts; several images, for raw) goes as several
calls with the seeds the contract gives image i (seed + i), so a batch still equals single requests.
Statuses become the contract's errors: 429/503 Overloaded, other 4xx InvalidRequest, 5xx TargetError, no
connection Unavailable. Only connecting is retried (a request that never left cannot have run twice).
"""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from harness import images
from harness.target import Capabilities, Target, check_budget, check_request
from harness.types import GenerationRequest, GenerationResult, InvalidRequest, Overloaded, TargetError, Unavailable


class Protocol:
    name: str
    path: str
    edit_path: str | None = None  # where an edit goes; None: the same path, the image in the body
    batch: bool = True   # one call carries n images of one prompt
    lora: bool = True    # the protocol has fields for a LoRA
    names: dict[str, str] = {}  # the contract's field -> the protocol's, where they differ (the server's errors
                                # name the protocol's field; the client adds the contract's)

    def body(self, request: GenerationRequest, prompt: str, n: int, seed: int | None) -> dict:
        raise NotImplementedError

    def content(self, request: GenerationRequest, prompt: str, n: int, seed: int | None,
                image: bytes | None) -> dict:
        """httpx's arguments for one call: the JSON body, or for an edit (IMAGE: the request's, encoded) the
        protocol's way to send an image."""
        body = self.body(request, prompt, n, seed)
        if image is None:
            return {"json": body}
        return self.edit(body | {"image_fit": request.image_fit}, image)

    def edit(self, body: dict, image: bytes) -> dict:
        raise NotImplementedError

    def images(self, response: httpx.Response) -> list[bytes]:
        raise NotImplementedError


class OpenAI(Protocol):
    name, path, edit_path = "openai", "/v1/images/generations", "/v1/images/edits"
    names = {"num_images": "n"}

    def body(self, request, prompt, n, seed):
        body = {"prompt": prompt, "n": n, "size": f"{request.width}x{request.height}", "response_format": "b64_json",
                "seed": seed, "num_inference_steps": request.num_inference_steps,
                "guidance_scale": request.guidance_scale}
        return body | ({"lora": request.lora, "lora_scale": request.lora_scale} if request.lora else {})

    def edit(self, body, image):  # multipart, as OpenAI's edits take it: the image a file, the rest form fields
        fields = {k: str(v) for k, v in body.items() if v is not None}
        return {"data": fields, "files": {"image": ("image.png", image, "image/png")}}

    def images(self, response):
        return [base64.b64decode(item["b64_json"]) for item in response.json()["data"]]


class A1111(Protocol):
    name, path, edit_path, lora = "a1111", "/sdapi/v1/txt2img", "/sdapi/v1/img2img", False
    names = {"num_inference_steps": "steps", "guidance_scale": "distilled_cfg_scale", "num_images": "batch_size",
             "image": "init_images"}

    def body(self, request, prompt, n, seed):
        if seed is not None and seed < 0:
            raise InvalidRequest(f"seed={seed!r}: must be None or >= 0 (the a1111 protocol reads -1 as 'random')")
        return {"prompt": prompt, "width": request.width, "height": request.height,
                "steps": request.num_inference_steps, "seed": -1 if seed is None else seed, "batch_size": n,
                "n_iter": 1, "cfg_scale": 1.0, "distilled_cfg_scale": request.guidance_scale, "sampler_name": "Euler"}

    def edit(self, body, image):  # img2img: the image base64 in init_images; Kontext has no denoising strength
        return {"json": body | {"init_images": [base64.b64encode(image).decode("ascii")]}}

    def images(self, response):
        return [base64.b64decode(image.split(",", 1)[-1]) for image in response.json()["images"]]  # data: URLs too


class Raw(Protocol):
    name, path, batch = "raw", "/generate", False

    def body(self, request, prompt, n, seed):
        body = {"prompt": prompt, "width": request.width, "height": request.height,
                "num_inference_steps": request.num_inference_steps, "guidance_scale": request.guidance_scale,
                "seed": seed}
        return body | ({"lora": request.lora, "lora_scale": request.lora_scale} if request.lora else {})

    def edit(self, body, image):
        return {"json": body | {"image": base64.b64encode(image).decode("ascii")}}

    def images(self, response):
        return [response.content]


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (OpenAI(), A1111(), Raw())}


def decode(data: bytes) -> np.ndarray:
    """Image bytes (PNG, JPEG, WebP, ...) -> (H, W, 3) uint8 RGB."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: queue;dur=1.2, denoise;dur=80` -> {"queue": 0.0012, "denoise": 0.08} (seconds)."""
    timings = {}
    for entry in filter(None, (part.strip() for part in header.split(","))):
        name, *params = (p.strip() for p in entry.split(";"))
        dur = next((p.split("=", 1)[1] for p in params if p.startswith("dur=")), None)
        if dur is not None:
            timings[name] = float(dur.strip('"')) / 1000
    return timings


def error_of(response: httpx.Response) -> tuple[str, str | None]:
    """What the server said went wrong, and the field it named: an OpenAI-style error (message, param),
    FastAPI's detail, or the start of the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase, None
    if isinstance(body, dict):
        error = body.get("error", body.get("detail", body))
        if isinstance(error, dict) and "message" in error:
            return str(error["message"]), error.get("param")
        return (error if isinstance(error, str) else json.dumps(error)[:500]), None
    return json.dumps(body)[:500], None


class HttpTarget(Target):
    """A service at `url` speaking `protocol`. Against fluxgate's own service (`python -m targets.service`)
    it reads the capabilities, LoRAs and reference weights from /info; another server gets the defaults."""

    name = "http"
    follow_redirects = False

    def __init__(self, url: str, protocol: str = "openai", path: str | None = None, timeout: str | float = 600.0,
                 retries: str | int = 2, pool: str | int = 64, reference: str | None = None, edits: str = ""):
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r}: must be one of {', '.join(PROTOCOLS)}")
        self.url, self.protocol = url.rstrip("/"), PROTOCOLS[protocol]
        self.path = path or self.protocol.path
        self.timeout, self.retries, self.pool = float(timeout), int(retries), int(pool)
        if self.timeout <= 0 or self.retries < 0 or self.pool < 1:
            raise ValueError(f"timeout={timeout!r}, retries={retries!r}, pool={pool!r}: need timeout > 0, "
                             "retries >= 0, pool >= 1")
        self.reference = reference
        self.server: dict = {}   # fluxgate's service describes itself at /info; other servers do not
        # fluxgate's service says at /info whether it edits images; another server is taken at its user's word
        self.capabilities = Capabilities(lora=False, remote=True, images=edits.lower() in ("1", "true", "yes"))
        self.client: httpx.Client | None = None

    def headers(self) -> dict[str, str]:
        """A service that wants a key (fluxgate's, bound beyond loopback) gets $FLUXGATE_API_KEY as a Bearer
        token: read from the environment only, so it never reaches a SPEC, a report or a log."""
        key = os.environ.get("FLUXGATE_API_KEY")
        return {"Authorization": f"Bearer {key}"} if key else {}

    def start(self) -> None:
        limits = httpx.Limits(max_connections=self.pool, max_keepalive_connections=self.pool)
        self.client = httpx.Client(base_url=self.url, headers=self.headers(), follow_redirects=self.follow_redirects,
                                   timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                                   transport=httpx.HTTPTransport(retries=self.retries, limits=limits))
        self.server = self.probe()
        if self.server:
            caps = {k: v for k, v in self.server["capabilities"].items() if k in Capabilities.__dataclass_fields__}
            self.capabilities = dataclasses.replace(Capabilities(**caps), components=False, local_gpu=False,
                                                    remote=True, lora=caps.get("lora", False) and self.protocol.lora)

    def probe(self) -> dict:
        """The service's /info if it is fluxgate's (and ready), {} for another server; Unavailable if none."""
        response = self.send("GET", "/info")
        if response.status_code in (401, 403):
            self.check(response)
        info = response.json() if response.headers.get("content-type") == "application/json" else None
        if response.status_code != 200 or not isinstance(info, dict) or info.get("service") != "fluxgate":
            return {}
        ready = self.send("GET", "/ready")
        if ready.status_code != 200:
            raise Unavailable(f"{self.url} is not ready: {error_of(ready)[0]}")
        return info

    def send(self, method: str, path: str, **content) -> httpx.Response:
        """One call; `content` is httpx's json=, or data= and files=."""
        if self.client is None:
            raise Unavailable(f"{self.url}: not started")
        try:
            return self.client.request(method, path, **content)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            raise Unavailable(f"{self.url}: cannot connect ({type(e).__name__}: {e})") from None
        except httpx.TimeoutException:
            raise TargetError(f"{self.url}{path}: no answer within {self.timeout} s") from None
        except httpx.TooManyRedirects as e:
            raise TargetError(f"{self.url}{path}: {e}") from None
        except httpx.TransportError as e:
            raise Unavailable(f"{self.url}: the connection broke ({type(e).__name__}: {e})") from None

    def check(self, response: httpx.Response) -> httpx.Response:
        """The response if it succeeded, else the contract's error for its status."""
        status = response.status_code
        if status < 300:
            return response
        where = f"HTTP {status} from {response.request.url.path}"
        message, param = error_of(response)
        if status in (401, 403):
            state = "was refused" if self.headers() else "is not set"
            raise Unavailable(f"{self.url}: {where}: {message} (FLUXGATE_API_KEY {state})")
        if status == 421:  # a server that does not answer to this name: no request will get through
            raise Unavailable(f"{self.url}: {where}: {message}")
        if status in (429, 503):
            retry = response.headers.get("retry-after")
            raise Overloaded(f"{message} ({where}{f', retry after {retry} s' if retry else ''})")
        if 400 <= status < 500:
            field = {wire: ours for ours, wire in self.protocol.names.items()}.get(param)
            # the server's words first, as they name the field; then the contract's name for it, if another
            raise InvalidRequest(f"{message} ({f'{field}; ' if field else ''}{where})")
        raise TargetError(f"{where}: {message}")

    def calls(self, request: GenerationRequest) -> list[tuple[int, str, int, int | None]]:
        """(prompt index, prompt, images, seed) per call; image k of the request keeps seed + k."""
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        n, base = request.num_images, request.seed
        seed = (lambda k: None if base is None else base + k)
        if self.protocol.batch:
            return [(j, p, n, seed(j * n)) for j, p in enumerate(prompts)]
        return [(j, p, 1, seed(j * n + i)) for j, p in enumerate(prompts) for i in range(n)]

    def generate(self, request: GenerationRequest) -> GenerationResult:
        check_request(request, self.capabilities, ranges=False)  # the ranges are the server's to judge, but
        calls = self.calls(request)                               # the budget of a request split into calls is
        if len(calls) > 1:                                        # ours: no call carries it whole
            check_budget(request, self.capabilities)
        started = time.perf_counter()
        got_images, timings, truncated, redirects, served = [], defaultdict(float), set(), 0, {}
        path = self.path if request.image is None else self.protocol.edit_path or self.path
        image = None if request.image is None else images.encode(request.image)  # once, whatever the calls
        for j, prompt, n, seed in calls:
            sent = time.perf_counter()
            response = self.check(self.send("POST", path, **self.protocol.content(request, prompt, n, seed, image)))
            timings["http"] += time.perf_counter() - sent
            redirects += len(response.history)
            for name, seconds in server_timing(response.headers.get("server-timing", "")).items():
                timings[f"server.{name}"] += seconds
            served = json.loads(response.headers.get("x-fluxgate-info", "{}"))  # fluxgate's service: model, dtype
            truncated.update([j] if served.get("truncated_prompts") else [])
            decoding = time.perf_counter()
            try:
                got = [decode(data) for data in self.protocol.images(response)]
            except (ValueError, KeyError, TypeError, OSError) as e:
                raise TargetError(f"{path} answered {response.status_code} with no image in it: "
                                  f"{type(e).__name__}: {e}") from None
            timings["client.decode"] += time.perf_counter() - decoding
            wrong = [g.shape for g in got if g.shape != (request.height, request.width, 3)]
            if len(got) != n or wrong:
                raise TargetError(f"asked for {n} image(s) of {request.width}x{request.height}, got {len(got)}"
                                  f"{f' with shapes {wrong}' if wrong else ''}")
            got_images += got
        info = {**served, "protocol": self.protocol.name, "calls": len(calls), "redirects": redirects}
        if "truncated_prompts" in served:  # only a server that reports truncation can say there was none
            info["truncated_prompts"] = sorted(truncated)
        if self.first_call is None:
            self.first_call = (request, time.perf_counter() - started)
        return GenerationResult(np.stack(got_images), dict(timings), info)

    def health(self) -> bool:
        try:
            return self.send("GET", "/ready" if self.server else "/").status_code < 500
        except (Unavailable, TargetError):
            return False

    def loras(self) -> list[str]:
        return list(self.server.get("loras", [])) if self.capabilities.lora else []

    def reference_spec(self) -> str | None:
        """The --reference option, else the service's own reference where its weights can be had here: a
        preset (built anywhere from its seed) or a model path that exists on this host."""
        if self.reference:
            return self.reference
        spec = self.server.get("reference_spec")
        if not spec:
            return None
        model = re.search(r"model=([^,]+)", spec)
        return spec if model is None or Path(model[1]).is_dir() else None

    def describe(self) -> dict:
        first = self.first_call[1] if self.first_call else None
        return {**super().describe(), "url": self.url, "protocol": self.protocol.name, "path": self.path,
                "server": self.server.get("target"), "first_request_s": first}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
