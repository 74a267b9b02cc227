"""Targets: what one is (Capabilities, Target), the rules every request obeys, and the registry.

Targets are registered by name as lazy "module:Class" strings (as lm-evaluation-harness maps its model
backends), so a target's heavy imports load only when that target is chosen.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import importlib
import inspect
import math
import urllib.parse
from numbers import Integral, Real
from typing import Any, Callable

from harness import images
from harness.types import GenerationRequest, GenerationResult, InvalidRequest


@dataclasses.dataclass(frozen=True)
class Capabilities:
    deterministic: bool = True   # the same request gives the same image
    batching: bool = True        # num_images > 1 or a list of prompts in one request
    guidance: bool = True        # guidance_scale changes the image (guidance-distilled dev); schnell ignores it
    components: bool = False     # text encoders, transformer and VAE can be called one by one
    local_gpu: bool = False      # runs on a GPU of this host, so CUDA timers and peaks apply
    concurrency: int = 1         # requests it serves at once
    max_queue: int = 0           # requests it holds waiting beyond those; more are Overloaded
    lora: bool = False
    max_batch: int = 8           # images per request; more is InvalidRequest, not an OOM
    max_side: int = 2048         # pixels; FLUX.1 is trained up to about 2 MP
    max_pixels: int = 8 * 1024 * 1024  # per request, all images together: eight 1 MP images or two 2048²;
                                       # activations grow with it, so it bounds a request's memory
    max_steps: int = 1000        # the scheduler's training timesteps: more steps mean nothing
    max_guidance: float = 100.0  # FLUX.1-dev was distilled on about 1 to 10; the model embeds guidance x 1000
                                 # as it does a timestep, so past float32's 3.4e38 the embedding overflows
    max_prompt_chars: int = 20_000  # per prompt, checked before tokenizing: T5's 512 tokens are about 2,000
                                    # characters of English, so this leaves room for prompts cut on purpose
    images: bool = False         # takes an input image to edit (a FLUX.1-Kontext model)
    max_image_side: int = 4096   # pixels of an input image: Kontext sees it at about 1 MP whatever its size,
                                 # so more only costs the upload and the resize
    remote: bool = False         # served by another process or host: a fresh client is not a fresh server,
                                 # and this process's memory is not the server's

    @property
    def busy(self) -> int:
        """Requests in flight that keep it busy: those it serves at once, plus one waiting where it queues, so it
        never idles between an answer and the next send."""
        return self.concurrency + (1 if self.max_queue else 0)


def check_request(request: GenerationRequest, caps: Capabilities, ranges: bool = True) -> None:
    """Raise InvalidRequest naming the first value that breaks a rule of the contract.

    ranges=False checks only what a client needs to put the request on the wire (types, numbers JSON can
    hold, the batch total it may split into calls) and leaves the ranges, the pixel budget among them, for the
    server to judge (a client that splits a request into calls checks the budget itself: check_budget).
    """
    def fail(name: str, value: Any, rule: str):
        raise InvalidRequest(f"{name}={excerpt(value)}: {rule}")

    def integer(value: Any) -> bool:
        return isinstance(value, Integral) and not isinstance(value, bool)

    prompt = request.prompt
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        fail("prompt", prompt, "must be a string or a list of strings")
    if not prompts:
        fail("prompt", prompt, "must hold at least one prompt")
    for p in prompts:  # length first: it is free, and what follows costs time in the length
        if ranges and len(p) > caps.max_prompt_chars:
            fail("prompt", p, f"longer than the {caps.max_prompt_chars:,} characters accepted")
        if not unicode(p):
            fail("prompt", p, "must be valid Unicode text (it holds a lone surrogate, which no tokenizer "
                              "or UTF-8 encoder takes)")
    for name in ("height", "width"):
        value = getattr(request, name)
        if not integer(value):
            fail(name, value, "must be an integer")
        if ranges and not 16 <= value <= caps.max_side:
            fail(name, value, f"must be between 16 and {caps.max_side}")
        if ranges and value % 16:
            fail(name, value, "must be a multiple of 16")
    steps = request.num_inference_steps
    if not integer(steps) or ranges and not 1 <= steps <= caps.max_steps:
        fail("num_inference_steps", steps, f"must be an integer from 1 to {caps.max_steps}")
    guidance = request.guidance_scale
    if not isinstance(guidance, Real) or isinstance(guidance, bool) or not math.isfinite(guidance) \
            or ranges and not 0 <= guidance <= caps.max_guidance:
        fail("guidance_scale", guidance, f"must be a finite number from 0 to {caps.max_guidance:g}")
    count = request.num_images
    if not integer(count) or count < 1:
        fail("num_images", count, "must be an integer >= 1")
    if len(prompts) * count > caps.max_batch:
        fail("num_images", count, f"{len(prompts)} prompt(s) x {count} exceeds the batch limit of {caps.max_batch}")
    if ranges:
        check_budget(request, caps)
    if request.lora is not None and not isinstance(request.lora, str):
        fail("lora", request.lora, "must be None or the name of a LoRA")
    if request.lora is not None and not caps.lora:
        fail("lora", request.lora, "this target does not support LoRA")
    scale = request.lora_scale
    if not isinstance(scale, Real) or isinstance(scale, bool) or not math.isfinite(scale):
        fail("lora_scale", scale, "must be a finite number")
    seed = request.seed
    if seed is not None and (not integer(seed) or ranges and not 0 <= seed < 2**63 - caps.max_batch):
        fail("seed", seed, f"must be None or an integer from 0 to {2**63 - caps.max_batch - 1}")
    fit = request.image_fit
    if not isinstance(fit, str) or fit not in images.FITS:
        fail("image_fit", fit, f"must be one of {', '.join(map(repr, images.FITS))}")
    if request.image is not None:
        if not caps.images:
            images.fail(request.image, "this target does not take an input image (a FLUX.1-Kontext model does)")
        if ranges:  # its header only: its pixels are decoded where they are used
            height, width = images.fit(*images.check(request.image, caps.max_image_side), fit,
                                       (request.height, request.width))
            n = len(prompts) * count  # each image attends over the input's tokens as well as its own
            pixels = n * request.height * request.width
            if pixels + n * height * width > caps.max_pixels:
                images.fail(request.image, f"{n} image(s) of {request.width}x{request.height}, each with the input "
                                           f"at {width}x{height}, are {pixels + n * height * width:,} pixels; a "
                                           f"request may have at most {caps.max_pixels:,}")


def check_budget(request: GenerationRequest, caps: Capabilities) -> None:
    """Raise InvalidRequest where the request's images, every prompt's, hold more pixels than the target takes.
    For a request whose types check_request has passed."""
    n = (1 if isinstance(request.prompt, str) else len(request.prompt)) * request.num_images
    pixels = n * request.height * request.width
    if pixels > caps.max_pixels:
        raise InvalidRequest(f"num_images={excerpt(request.num_images)}: {n} image(s) of {request.width}x"
                             f"{request.height} are {pixels:,} pixels; a request may have at most "
                             f"{caps.max_pixels:,}")


def unicode(text: str) -> bool:
    """Whether `text` is valid Unicode: no lone surrogate (which JSON's \\ud800 escapes can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def excerpt(value: Any, limit: int = 60) -> str:
    """repr(value), cut to about `limit` characters: an error names the value without echoing 50 MB back."""
    text = repr(value[: 2 * limit] if isinstance(value, str) else value)  # not the repr of all of a 50 MB string
    if len(text) <= limit and not (isinstance(value, str) and len(value) > 2 * limit):
        return text
    size = f"{len(value):,} characters" if isinstance(value, str) else f"{len(text):,} characters as text"
    return f"{text[:limit]}... ({size})"


class Target(abc.ABC):
    """One text-to-image deployment behind the contract. Use as a context manager or start()/close()."""

    name: str = "target"
    spec: str = ""                       # the SPEC it was made from, set by make_target
    capabilities: Capabilities = Capabilities()
    first_call: tuple[GenerationRequest, float] | None = None  # remote targets: the first request and its
                                                               # seconds, the cold start if the server was cold
    times_itself: bool = False           # its results carry timings["total"] measured where it runs (a target
                                         # in a process of its own), which the harness keeps

    def start(self) -> None:
        """Load weights, connect, warm nothing: cold start is measured by the first generate()."""

    @abc.abstractmethod
    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Images for the request; raises only the error types of harness.types."""

    def health(self) -> bool:
        return True

    def close(self) -> None:
        """Release weights, connections and servers."""

    def loras(self) -> list[str]:
        """Names of the LoRAs a request may ask for."""
        return []

    def reference_spec(self) -> str | None:
        """The SPEC of the reference on this target's weights, where they are known (the quality oracle)."""
        return None

    def describe(self) -> dict[str, Any]:
        """What the report says of the target."""
        return {"name": self.name, "spec": self.spec, "capabilities": dataclasses.asdict(self.capabilities)}

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()


DEFAULT = "pipeline:preset=tiny-dev"  # the embedded default: diffusers' FluxPipeline, judged against the reference

# name -> Target subclass, or "module:Class" imported on first use
TARGETS: dict[str, type[Target] | str] = {
    "reference": "targets.reference:ReferenceTarget",
    "pipeline": "targets.pipeline:PipelineTarget",
    "optimized": "targets.optimized:OptimizedTarget",
    "http": "targets.http:HttpTarget",
    "https": "targets.http:HttpTarget",
    "modal": "targets.modal:ModalTarget",
    "triton": "targets.triton.target:TritonTarget",
}


def register_target(name: str) -> Callable[[type[Target]], type[Target]]:
    def register(cls: type[Target]) -> type[Target]:
        TARGETS[name] = cls
        return cls
    return register


def get_target_class(name: str) -> type[Target]:
    """A registered name, or "package.module:Class" for a target of one's own."""
    if "." in name and ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr, None)
        if not (isinstance(cls, type) and issubclass(cls, Target)):
            raise ValueError(f"target {name!r}: {attr!r} in {module!r} is not a Target subclass")
        return cls
    if name not in TARGETS:
        close = difflib.get_close_matches(name, TARGETS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown target {name!r}{hint} (known: {', '.join(sorted(TARGETS))})")
    entry = TARGETS[name]
    if isinstance(entry, str):
        module, _, attr = entry.partition(":")
        entry = TARGETS[name] = getattr(importlib.import_module(module), attr)
    return entry


def parse_spec(spec: str) -> tuple[str, dict[str, str]]:
    """A SPEC string -> (target name, options). Three forms:

    reference:preset=tiny-dev,dtype=fp32      -> ("reference", {"preset": "tiny-dev", "dtype": "fp32"})
    http://127.0.0.1:8000?protocol=openai     -> ("http", {"url": "http://127.0.0.1:8000", "protocol": "openai"})
    mypkg.targets:MyTarget:key=value          -> ("mypkg.targets:MyTarget", {"key": "value"})
    """
    if "://" in spec:
        url = urllib.parse.urlsplit(spec)
        options = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        return url.scheme, {"url": urllib.parse.urlunsplit(url._replace(query="")), **options}
    head, _, rest = spec.partition(":")
    if "." in head:  # a module path: the class name follows the first colon
        cls, _, rest = rest.partition(":")
        head = f"{head}:{cls}"
    options = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"target spec {spec!r}: option {item!r} is not key=value")
        options[key.strip()] = value.strip()
    return head.strip(), options


def option_names(cls: type[Target]) -> tuple[list[str], bool]:
    """The options CLS's constructor takes, its own and, where it passes **options on, its bases'; and whether
    it takes any name at all (a constructor that ends in **options with no base to name them)."""
    known: list[str] = []
    for c in (c for c in cls.__mro__ if "__init__" in c.__dict__ and c is not object):
        params = list(inspect.signature(c.__init__).parameters.values())[1:]  # after self
        known += [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            return known, False
    return known, True


def make_target(spec: str) -> Target:
    """The target a SPEC names, constructed (not started); unknown names and options are ValueErrors."""
    name, options = parse_spec(spec)
    cls = get_target_class(name)
    known, open_ended = option_names(cls)
    unknown = sorted(set(options) - set(known))
    if unknown and not open_ended:
        raise ValueError(f"target {name!r} has no option {unknown[0]!r} (options: {', '.join(known) or 'none'})")
    target = cls(**options)
    target.spec = spec
    return target
