"""The service: any in-process target behind HTTP (FastAPI), in the three protocols fluxgate's HTTP target
speaks.

    POST /v1/images/generations   OpenAI images API: prompt, n, size "WxH", response_format b64_json; and the
                                  extension fields seed, num_inference_steps, guidance_scale, lora, lora_scale
    POST /sdapi/v1/txt2img        AUTOMATIC1111's web UI (and Forge's): prompt, width, height, steps, seed
                                  (-1: random), batch_size, n_iter, distilled_cfg_scale (FLUX's guidance)
    POST /generate                raw: the request's own fields in, one PNG out (the shape of a Modal
                                  endpoint such as /flux-dev); the path is a setting
    POST /v1/images/edits         an edit (a Kontext model): OpenAI's multipart form, the image a file part,
                                  the fields above as form fields, and image_fit (harness.images.FITS)
    POST /sdapi/v1/img2img        an edit, AUTOMATIC1111's: txt2img's fields and init_images (one, base64);
                                  denoising_strength is accepted and has no effect on Kontext
                                  (the raw route edits when its body carries "image", base64)
    GET  /health, /ready, /info   alive; able to serve now; what is served and how

Every image answer carries a Server-Timing header (queue, compute and the target's own stages, in ms) and
an X-Fluxgate-Info header (the target's info: model, dtype, truncated prompts). Errors are JSON,
{"error": {"message", "type", "param"}}, whatever raised them: 422 for a body that does not fit the schema
(or is not JSON), 400 for a value that breaks a rule, 404 for an unknown LoRA or path, 405 for a wrong method,
429 (with Retry-After) when the queue is full, 503 while loading or shutting down, 504 past the request
timeout, 500 when the target fails. A message names the value it refuses by an excerpt, never whole.

Work nobody waits for is stopped: a request whose client disconnects is dropped from the queue or, running,
cancelled at its next denoising step (harness.cancel), as is one past the timeout.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import re
import time
from contextlib import asynccontextmanager
from typing import Annotated, Awaitable, Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from harness.target import excerpt, unicode
from harness.types import GenerationRequest, InvalidRequest, Overloaded
from targets.http import PROTOCOLS
from targets.service import error_body
from targets.service.pool import Busy, Pool, Settings, UnknownLora, invalid_field

log = logging.getLogger("fluxgate.service")
NO_MASK = "not supported (Kontext edits by the prompt, with no inpainting mask)"


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", compress_level=1)  # lossless; level 1: fast, still small
    return out.getvalue()


def pngs(result) -> list[bytes]:
    return [png(image) for image in result.images]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def valid_text(value: str) -> str:
    if not unicode(value):  # JSON's \ud800 escapes make strings no tokenizer or UTF-8 answer can take
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)")
    return value


Text = Annotated[str, AfterValidator(valid_text)]


# Strict schemas: "512" is not 512, 512.0 is not 512, true is not 1, NaN and Infinity (which Python's JSON
# reads, 1e309 too) are no numbers. A value of the right type that breaks a rule (a size not a multiple of
# 16) is left to check_request, so both kinds of error name the field.
class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class OpenAIImages(Strict):
    prompt: Text
    n: int = 1
    size: Text = "1024x1024"
    response_format: Literal["b64_json"] = "b64_json"   # "url" would need somewhere to keep the images
    model: Text | None = None                           # accepted: one model per server
    user: Text | None = None
    quality: Text | None = None
    style: Text | None = None
    seed: int | None = None                             # extensions
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    lora: Text | None = None
    lora_scale: float = 1.0

    def request(self) -> GenerationRequest:
        size = re.fullmatch(r"(-?\d{1,100})x(-?\d{1,100})", self.size)  # a sign and 100 digits, so check_request
        if not size:                                                      # names the side (int() takes 4,300)
            raise InvalidRequest(f"size={excerpt(self.size)}: must be WIDTHxHEIGHT in pixels, e.g. 1024x1024")
        width, height = int(size[1]), int(size[2])
        return GenerationRequest(self.prompt, height, width, self.num_inference_steps, self.guidance_scale,
                                 self.seed, self.n, self.lora, self.lora_scale)


class OpenAIEdit(OpenAIImages):
    """POST /v1/images/edits: the same fields as form fields (strings, read as numbers where numbers are due),
    and the image as a file part."""
    model_config = ConfigDict(strict=False)
    image: bytes                                        # the file part's bytes
    image_fit: Text = "preferred"                       # extension: harness.images.FITS

    def request(self) -> GenerationRequest:
        return dataclasses.replace(super().request(), image=self.image, image_fit=self.image_fit)


class A1111Txt2Img(Strict):
    model_config = ConfigDict(extra="ignore")  # (merged into Strict's) its clients send dozens of sampler
                                               # settings: ignored, not refused
    prompt: Text
    negative_prompt: Text = ""            # FLUX without true CFG has no use for it
    width: int = 512
    height: int = 512
    steps: int = 20
    seed: int = -1                        # -1: random
    batch_size: int = Field(1, ge=1)      # images per batch, and batches: batch_size x n_iter images in all
    n_iter: int = Field(1, ge=1)
    cfg_scale: float = 1.0                # true CFG: FLUX.1-dev runs without it
    distilled_cfg_scale: float = 3.5      # Forge's name for FLUX's guidance embedding

    def request(self) -> GenerationRequest:
        seed = None if self.seed == -1 else self.seed
        return GenerationRequest(self.prompt, self.height, self.width, self.steps, self.distilled_cfg_scale, seed,
                                 self.batch_size * self.n_iter)

    def said(self) -> dict[str, str]:
        """How the body put num_images, where it is not one field."""
        return {"num_images": f"batch_size={self.batch_size}, n_iter={self.n_iter}"} if self.n_iter > 1 else {}


class A1111Img2Img(A1111Txt2Img):
    init_images: list[Text] = Field(min_length=1, max_length=1)  # base64 (or a data: URL): the image to edit
    denoising_strength: float = 0.75      # accepted, no effect: Kontext conditions on the whole image, it does
                                          # not start from a noised copy of it
    image_fit: Text = "preferred"         # extension: harness.images.FITS
    mask: Text | None = None              # inpainting: refused, as Kontext edits by the prompt

    def request(self) -> GenerationRequest:
        if self.mask is not None:
            raise InvalidRequest(f"mask={excerpt(self.mask, 40)}: {NO_MASK}")
        return dataclasses.replace(super().request(), image=unbase64(self.init_images[0]), image_fit=self.image_fit)


class RawGenerate(Strict):
    prompt: Text
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    seed: int | None = None
    lora: Text | None = None
    lora_scale: float = 1.0
    image: Text | None = None             # base64 (or a data: URL) of an image to edit
    image_fit: Text = "preferred"

    def request(self) -> GenerationRequest:
        return GenerationRequest(self.prompt, self.height, self.width, self.num_inference_steps,
                                 self.guidance_scale, self.seed, 1, self.lora, self.lora_scale,
                                 None if self.image is None else unbase64(self.image), self.image_fit)


def unbase64(text: str) -> bytes:
    """The bytes of base64 text (line breaks allowed, as MIME wraps it), or of a data: URL's; InvalidRequest
    naming the image where it is not base64."""
    data = text.split(",", 1)[-1] if text.startswith("data:") else text
    try:
        return base64.b64decode("".join(data.split()), validate=True)
    except ValueError:
        raise InvalidRequest(f"image={excerpt(text, 40)}: must be base64 of an encoded image (PNG, JPEG, WebP)") \
            from None


def error(status: int, message: str, kind: str, param: str | None = None, headers: dict | None = None):
    return Response(error_body(message, kind, param), status, headers=headers, media_type="application/json")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def unless_gone(http: Request, work: Awaitable):
    """The result of `work`, or ClientGone (with `work` cancelled) if the client disconnects first: a server
    reads an http.disconnect message once the body is in and the connection drops."""
    async def gone():
        while (await http.receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():  # gone, or this handler itself cancelled: the work is for nobody
            task.cancel()
            await asyncio.wait({task})  # until it has given back its place in the queue and stopped its worker
    if task.cancelled():
        raise ClientGone
    return task.result()


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in timings.items())


def make_app(settings: Settings, raw_path: str = "/generate", docs: bool = False) -> FastAPI:
    """The service for `settings`: the pool is made here (a bad SPEC fails now) and loaded at startup.
    docs: serve /docs and /openapi.json (off: they tell a stranger every route and field)."""
    pool = Pool(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = None if settings.lazy else asyncio.create_task(pool.load())
        if loading is not None:
            loading.add_done_callback(_loaded)
        yield
        pool.closing = True
        await asyncio.get_running_loop().run_in_executor(None, pool.close)

    def _loaded(task):
        if not task.cancelled() and task.exception() is not None:
            log.error("%s", pool.load_error)
            app.state.failed = True  # __main__ stops the server with exit code 3

    app = FastAPI(title="fluxgate service", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None, openapi_url="/openapi.json" if docs else None)
    app.state.pool, app.state.failed = pool, False
    # the routes that take an image to edit, which the Guard lets carry a larger body
    app.state.upload_paths = {"/v1/images/edits", "/sdapi/v1/img2img", raw_path} if pool.capabilities.images \
        else set()

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            reason = first.get("ctx", {}).get("error", first["msg"])
            return error(422, f"body: not valid JSON ({reason} at character {first['loc'][-1]})",
                         "invalid_request_error", "body")
        loc = [str(part) for part in first["loc"] if part != "body"]
        field = loc[0] if loc else "body"
        value = f"={excerpt(first['input'])}" if loc and first["type"] != "missing" else ""
        return error(422, f"{field}{value}: {first['msg']}", "invalid_request_error", field)

    @app.exception_handler(HTTPException)  # routing's own answers (404, 405) in the one error shape
    async def http_error(request: Request, exc: HTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "invalid_request_error")
        return error(exc.status_code, f"{request.method} {excerpt(request.url.path)}: {exc.detail}", kind,
                     headers=exc.headers)

    @app.exception_handler(Exception)  # a bug of ours: JSON all the same, the trace in the log
    async def internal_error(request: Request, exc: Exception):
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    async def serve(http: Request, protocol: str, body, encode, respond, said: dict[str, str] | None = None):
        """Run the body's request, answer with respond(result, encode(result), headers) or the error it met.
        said: how the body put a field the contract names otherwise (a1111's batch_size and n_iter for
        num_images)."""
        try:
            # off the event loop: an image's base64 takes a while (its header is read at admission, its pixels
            # decoded by the worker that uses them)
            carries = getattr(body, "image", None) is not None or getattr(body, "init_images", None)
            request = await asyncio.to_thread(body.request) if carries else body.request()
            result, timings, encoded = await unless_gone(http, pool.run(request, encode))
        except ClientGone:  # nobody reads this; the access log does
            return error(499, "the client closed the connection", "cancelled")
        except InvalidRequest as e:  # named as the protocol names the field: "n=0", not "num_images=0"
            field = invalid_field(e)
            wire = PROTOCOLS[protocol].names.get(field, field)
            head, sep, rule = str(e).partition(": ")
            if field is not None:
                head = (said or {}).get(field, wire + head[len(field):])
            return error(400, head + sep + rule, "invalid_request_error", wire)
        except UnknownLora as e:
            return error(404, str(e), "not_found", "lora")
        except Busy as e:
            status = 429 if pool.ready and not pool.closing else 503
            return error(status, str(e), "overloaded", headers={"Retry-After": str(e.retry_after)})
        except Overloaded as e:  # the target's own admission control, behind ours
            return error(429, str(e), "overloaded", headers={"Retry-After": "1"})
        except TimeoutError:
            return error(504, f"no result within the service's timeout of {settings.timeout} s", "timeout")
        except Exception as e:  # the target failed: say so, keep serving, log the trace here, not in the answer
            log.exception("generation failed")
            return error(500, f"{type(e).__name__}: {excerpt(str(e), 300)}", "server_error")
        timings = {**timings, **result.timings}
        info = {k: v for k, v in result.info.items() if isinstance(v, (str, int, float, list, bool, type(None)))}
        headers = {"Server-Timing": server_timing(timings), "X-Fluxgate-Info": json.dumps(info)}
        return respond(result, encoded, headers)

    def openai_answer(result, encoded, headers):
        return JSONResponse({"created": int(time.time()), "data": [{"b64_json": b64(p)} for p in encoded]},
                            headers=headers)

    @app.post("/v1/images/generations")
    async def openai(body: OpenAIImages, http: Request):
        return await serve(http, "openai", body, pngs, openai_answer)

    @app.post("/v1/images/edits")
    async def openai_edit(http: Request):
        form = await http.form(max_files=2, max_fields=32)
        files = {k: v for k, v in form.multi_items() if isinstance(v, UploadFile)}
        fields = {k: v for k, v in form.multi_items() if not isinstance(v, UploadFile)}
        if "mask" in files or "mask" in fields:
            return error(400, f"mask: {NO_MASK}", "invalid_request_error", "mask")
        if "image" not in files:
            return error(422, "image: required, as a file part of a multipart/form-data body",
                         "invalid_request_error", "image")
        try:
            body = OpenAIEdit.model_validate({**fields, "image": await files["image"].read()})
        except ValidationError as e:
            raise RequestValidationError(e.errors()) from None
        return await serve(http, "openai", body, pngs, openai_answer)

    def a1111_answer(body):
        def respond(result, images, headers):
            seeds = [body.seed + i for i in range(len(images))] if body.seed >= 0 else []  # -1: drawn unseen
            info = {"prompt": body.prompt, "seed": body.seed, "all_seeds": seeds,
                    "width": body.width, "height": body.height, "steps": body.steps,
                    "distilled_cfg_scale": body.distilled_cfg_scale}
            parameters = body.model_dump(exclude={"init_images"})  # the images are the client's own: not echoed
            return JSONResponse({"images": [b64(p) for p in images], "parameters": parameters,
                                 "info": json.dumps(info)}, headers=headers)
        return respond

    @app.post("/sdapi/v1/txt2img")
    async def a1111(body: A1111Txt2Img, http: Request):
        return await serve(http, "a1111", body, pngs, a1111_answer(body), body.said())

    @app.post("/sdapi/v1/img2img")
    async def a1111_edit(body: A1111Img2Img, http: Request):
        return await serve(http, "a1111", body, pngs, a1111_answer(body), body.said())

    @app.post(raw_path)
    async def raw(body: RawGenerate, http: Request):
        return await serve(http, "raw", body, lambda result: png(result.images[0]),
                           lambda result, image, headers: Response(image, media_type="image/png", headers=headers))

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        if pool.load_error:
            return error(503, pool.load_error, "unavailable")
        if pool.closing:
            return error(503, "shutting down", "unavailable")
        if not pool.ready and not settings.lazy:
            return error(503, "loading", "unavailable", headers={"Retry-After": "1"})
        return {"status": "ready", "loaded": pool.ready, "pending": pool.pending}

    @app.get("/info")
    async def info():
        target = pool.targets[0]
        return {"service": "fluxgate", "target": target.describe(), "reference_spec": target.reference_spec(),
                "capabilities": dataclasses.asdict(pool.capabilities), "loras": pool.loras(),
                "settings": dataclasses.asdict(settings),
                "protocols": {"openai": "/v1/images/generations", "a1111": "/sdapi/v1/txt2img", "raw": raw_path},
                "edits": {"openai": "/v1/images/edits", "a1111": "/sdapi/v1/img2img", "raw": raw_path}
                if pool.capabilities.images else {}}

    return app
