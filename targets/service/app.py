"""The service: any in-process target behind HTTP (FastAPI), in the three protocols fluxgate's HTTP target
speaks.

    POST /v1/images/generations   OpenAI images API: prompt, n, size "WxH", response_format b64_json; and the
                                  extension fields seed, num_inference_steps, guidance_scale, lora, lora_scale
    POST /sdapi/v1/txt2img        AUTOMATIC1111's web UI (and Forge's): prompt, width, height, steps, seed
                                  (-1: random), batch_size, n_iter, distilled_cfg_scale (FLUX's guidance)
    POST /generate                raw: the request's own fields in, one PNG out (the shape of a Modal
                                  endpoint such as /flux-dev); the path is a setting
    GET  /health, /ready, /info   alive; able to serve now; what is served and how

Every image answer carries a Server-Timing header (queue, compute and the target's own stages, in ms) and
an X-Fluxgate-Info header (the target's info: model, dtype, truncated prompts). Errors are JSON,
{"error": {"message", "type", "param"}}: 422 for a body that does not fit the schema, 400 for a value that
breaks a rule, 404 for an unknown LoRA, 429 (with Retry-After) when the queue is full, 503 while loading or
shutting down, 504 past the request timeout, 500 when the target fails.
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
from typing import Literal

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import BaseModel, ConfigDict

from harness.types import GenerationRequest, InvalidRequest, Overloaded
from targets.http import PROTOCOLS
from targets.service.pool import Busy, Pool, Settings, UnknownLora, invalid_field

log = logging.getLogger("fluxgate.service")


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", compress_level=1)  # lossless; level 1: fast, still small
    return out.getvalue()


def pngs(result) -> list[bytes]:
    return [png(image) for image in result.images]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# Strict schemas: "512" is not 512, 512.0 is not 512, true is not 1. A value of the right type that breaks a
# rule (a size not a multiple of 16) is left to check_request, so both kinds of error name the field.
class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class OpenAIImages(Strict):
    prompt: str
    n: int = 1
    size: str = "1024x1024"
    response_format: Literal["b64_json"] = "b64_json"   # "url" would need somewhere to keep the images
    model: str | None = None                            # accepted: one model per server
    user: str | None = None
    quality: str | None = None
    style: str | None = None
    seed: int | None = None                             # extensions
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    lora: str | None = None
    lora_scale: float = 1.0

    def request(self) -> GenerationRequest:
        size = re.fullmatch(r"(-?\d+)x(-?\d+)", self.size)  # a sign, so check_request can name it
        if not size:
            raise InvalidRequest(f"size={self.size!r}: must be WIDTHxHEIGHT in pixels, e.g. 1024x1024")
        width, height = int(size[1]), int(size[2])
        return GenerationRequest(self.prompt, height, width, self.num_inference_steps, self.guidance_scale,
                                 self.seed, self.n, self.lora, self.lora_scale)


class A1111Txt2Img(Strict):
    model_config = ConfigDict(strict=True, extra="ignore")  # its clients send dozens of sampler settings
    prompt: str
    negative_prompt: str = ""             # FLUX without true CFG has no use for it
    width: int = 512
    height: int = 512
    steps: int = 20
    seed: int = -1                        # -1: random
    batch_size: int = 1
    n_iter: int = 1
    cfg_scale: float = 1.0                # true CFG: FLUX.1-dev runs without it
    distilled_cfg_scale: float = 3.5      # Forge's name for FLUX's guidance embedding

    def request(self) -> GenerationRequest:
        seed = None if self.seed == -1 else self.seed
        return GenerationRequest(self.prompt, self.height, self.width, self.steps, self.distilled_cfg_scale, seed,
                                 self.batch_size * self.n_iter)


class RawGenerate(Strict):
    prompt: str
    width: int = 1024
    height: int = 1024
    num_inference_steps: int = 28
    guidance_scale: float = 3.5
    seed: int | None = None
    lora: str | None = None
    lora_scale: float = 1.0

    def request(self) -> GenerationRequest:
        return GenerationRequest(self.prompt, self.height, self.width, self.num_inference_steps,
                                 self.guidance_scale, self.seed, 1, self.lora, self.lora_scale)


def error(status: int, message: str, kind: str, param: str | None = None, headers: dict | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param}}, status, headers=headers)


def server_timing(timings: dict[str, float]) -> str:
    return ", ".join(f"{name};dur={seconds * 1000:.3f}" for name, seconds in timings.items())


def make_app(settings: Settings, raw_path: str = "/generate") -> FastAPI:
    """The service for `settings`: the pool is made here (a bad SPEC fails now) and loaded at startup."""
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

    app = FastAPI(title="fluxgate service", lifespan=lifespan)
    app.state.pool, app.state.failed = pool, False

    @app.exception_handler(RequestValidationError)
    async def schema_error(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        loc = [str(part) for part in first["loc"] if part != "body"]
        field = loc[0] if loc else "body"
        value = f"={first['input']!r}" if loc and first["type"] != "missing" else ""
        return error(422, f"{field}{value}: {first['msg']}", "invalid_request_error", field)

    async def serve(protocol: str, request: GenerationRequest, encode, respond):
        try:
            result, timings, encoded = await pool.run(request, encode)
        except InvalidRequest as e:  # named as the protocol names the field: "n=0", not "num_images=0"
            field = invalid_field(e)
            wire = PROTOCOLS[protocol].names.get(field, field)
            message = str(e) if wire == field else wire + str(e)[len(field):]
            return error(400, message, "invalid_request_error", wire)
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
            return error(500, f"{type(e).__name__}: {e}", "server_error")
        timings = {**timings, **result.timings}
        info = {k: v for k, v in result.info.items() if isinstance(v, (str, int, float, list, bool, type(None)))}
        headers = {"Server-Timing": server_timing(timings), "X-Fluxgate-Info": json.dumps(info)}
        return respond(result, encoded, headers)

    @app.post("/v1/images/generations")
    async def openai(body: OpenAIImages):
        try:
            request = body.request()
        except InvalidRequest as e:
            return error(400, str(e), "invalid_request_error", "size")
        return await serve("openai", request, pngs, lambda result, images, headers: JSONResponse(
            {"created": int(time.time()), "data": [{"b64_json": b64(p)} for p in images]}, headers=headers))

    @app.post("/sdapi/v1/txt2img")
    async def a1111(body: A1111Txt2Img):
        request = body.request()

        def respond(result, images, headers):
            seeds = [body.seed + i for i in range(len(images))] if body.seed >= 0 else []  # -1: drawn unseen
            info = {"prompt": body.prompt, "seed": body.seed, "all_seeds": seeds,
                    "width": body.width, "height": body.height, "steps": body.steps,
                    "distilled_cfg_scale": body.distilled_cfg_scale}
            return JSONResponse({"images": [b64(p) for p in images], "parameters": body.model_dump(),
                                 "info": json.dumps(info)}, headers=headers)

        return await serve("a1111", request, pngs, respond)

    @app.post(raw_path)
    async def raw(body: RawGenerate):
        return await serve("raw", body.request(), lambda result: png(result.images[0]),
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
                "protocols": {"openai": "/v1/images/generations", "a1111": "/sdapi/v1/txt2img", "raw": raw_path}}

    return app
