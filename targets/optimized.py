"""diffusers' FluxPipeline (FluxKontextPipeline for a Kontext model) with seed 000's optimizations, each an
option of the SPEC and off by default:

    optimized:preset=tiny-dev,quantize=int8wo,fuse_qkv=1,channels_last=1,scheduler=dpm++,steps=14,cache=0.1
    optimized:preset=tiny-dev,compile=default,regional=1,compile_cache=/var/cache/flux.megacache

Every option is applied by the library that has it (torchao, diffusers, torch), never by code of our own. One
that cannot run here (fp8 on a CPU, a CUDA attention kernel without CUDA, flash-attn not installed) refuses to
start, naming the option and the reason; a value that names nothing is a usage error. describe() gives, for
each option, the evidence that it took effect, and each result's info what it did to that request.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from harness.types import GenerationRequest, GenerationResult, Unavailable
from targets.pipeline import PipelineTarget

QUANTIZE = {  # option -> torchao config: weights (and activations) of the transformer's Linear layers
    "int8wo": "Int8WeightOnlyConfig",                   # int8 weights, bf16/fp32 activations: half the memory
    "int8dq": "Int8DynamicActivationInt8WeightConfig",  # int8 weights and activations, scaled per token
    "fp8": "Float8DynamicActivationFloat8WeightConfig", # float8 both: Ada and Hopper tensor cores (sm 8.9+)
}
ATTENTION = {  # option -> diffusers' attention backend, what it needs, and the op the profiler sees it run
    "sdpa": ("native", None, "scaled_dot_product"),                      # torch picks the kernel
    "math": ("_native_math", None, "_scaled_dot_product_attention_math"),  # the reference kernel: lossless
    "flash": ("_native_flash", None, "_scaled_dot_product_flash_attention"),  # FlashAttention (CPU too)
    "efficient": ("_native_efficient", "cuda", "_scaled_dot_product_efficient_attention"),
    "cudnn": ("_native_cudnn", "cuda", "_scaled_dot_product_cudnn_attention"),
    "flash-attn": ("flash", "flash_attn", "flash_attn"),                 # the flash-attn package (`gpu` extra)
}
SCHEDULERS = ("dpm++",)
COMPILE = {  # torch.compile's modes -> whether they capture CUDA graphs (torch._inductor.list_mode_options)
    "default": False,
    "max-autotune-no-cudagraphs": False,  # Inductor tries several kernels per op and keeps the fastest
    "reduce-overhead": True,              # CUDA graphs: a step's hundreds of launches replayed as one
    "max-autotune": True,
}
MODIFIERS = {"regional": "compile", "compile_vae": "compile", "compile_cache": "compile"}  # option -> what it modifies


@dataclass(frozen=True)
class Options:
    quantize: str = ""           # QUANTIZE's keys: torchao on the transformer's Linear layers
    attention: str = ""          # ATTENTION's keys: the kernel every attention layer dispatches to
    fuse_qkv: bool = False       # q, k and v as one Linear (diffusers' fuse_qkv_projections): one matmul for three
    channels_last: bool = False  # the VAE's tensors in NHWC, the layout cuDNN's convolutions are fastest in
    scheduler: str = ""          # dpm++: DPM-Solver++ (2nd order) in flow-matching mode, FLUX's shift kept
    steps: int = 0               # every request runs this many steps, whatever it asks (seed 000: 14 for 28)
    cache: float = 0.0           # first-block cache: a step whose first block moves less than this (relative
                                 # mean) reuses the other blocks' last output (diffusers' FirstBlockCacheConfig)
    compile: str = ""            # COMPILE's keys: torch.compile of the transformer, in that mode
    regional: bool = False       # compile each kind of repeated block once (diffusers' compile_repeated_blocks),
                                 # not the whole transformer: the same kernels for a fraction of the compile time
    compile_vae: bool = False    # the VAE's decoder compiled too
    compile_cache: str = ""      # a file: torch.compiler's "mega-cache" of compiled artifacts, loaded at start
                                 # where it exists and written after each request that compiled something

    def spec(self) -> list[str]:
        """The options set, as SPEC parts ("fuse_qkv=1"), in field order."""
        parts = []
        for name, value in dataclasses.asdict(self).items():
            if value:
                parts.append(f"{name}={int(value) if isinstance(value, bool) else value}")
        return parts

    def rows(self) -> list[str]:
        """The ablation's rows: each option alone (with what modifies it: compile with its cache), then all of
        them together where there are several."""
        parts = dict(part.split("=", 1) for part in self.spec())
        alone = [",".join(f"{name}={value}" for name, value in parts.items()
                          if main in (name, MODIFIERS.get(name))) for main in parts if main not in MODIFIERS]
        return alone + ([",".join(self.spec())] if len(alone) > 1 else [])

    @classmethod
    def parse(cls, given: dict[str, str]) -> Options:
        """Options from the SPEC's strings; a ValueError names the option, the value and what it may be."""
        def flag(name: str) -> bool:
            value = given.get(name, "0")
            if value not in ("0", "1", "true", "false"):
                raise ValueError(f"{name}={value!r}: must be 1 or 0")
            return value in ("1", "true")

        def number(name: str, kind: type, low: float, what: str):
            try:
                value = kind(given.get(name, 0))
            except ValueError:
                value = None
            if value is None or not (value == 0 or value >= low):
                raise ValueError(f"{name}={given[name]!r}: must be 0 (off) or {what} of at least {low:g}")
            return value

        options = cls(quantize=given.get("quantize", ""), attention=given.get("attention", ""),
                      fuse_qkv=flag("fuse_qkv"), channels_last=flag("channels_last"),
                      scheduler=given.get("scheduler", ""), steps=number("steps", int, 1, "a whole number"),
                      cache=number("cache", float, 1e-6, "a number"), compile=given.get("compile", ""),
                      regional=flag("regional"), compile_vae=flag("compile_vae"),
                      compile_cache=given.get("compile_cache", ""))
        for name, known in (("quantize", QUANTIZE), ("attention", ATTENTION), ("scheduler", SCHEDULERS),
                            ("compile", COMPILE)):
            value = getattr(options, name)
            if value and value not in known:
                raise ValueError(f"{name}={value!r}: must be one of {', '.join(known)}")
        for name, main in MODIFIERS.items():
            if getattr(options, name) and not getattr(options, main):
                raise ValueError(f"{name}={given[name]!r}: modifies {main}, which is not set (add {main}=...)")
        return options


class OptimizedTarget(PipelineTarget):
    name = "optimized"

    def __init__(self, quantize: str = "", attention: str = "", fuse_qkv: str = "0", channels_last: str = "0",
                 scheduler: str = "", steps: str = "0", cache: str = "0", compile: str = "", regional: str = "0",
                 compile_vae: str = "0", compile_cache: str = "", **options):
        super().__init__(**options)
        self.options = Options.parse({"quantize": quantize, "attention": attention, "fuse_qkv": fuse_qkv,
                                      "channels_last": channels_last, "scheduler": scheduler, "steps": steps,
                                      "cache": cache, "compile": compile, "regional": regional,
                                      "compile_vae": compile_vae, "compile_cache": compile_cache})
        self.evidence: dict[str, dict[str, Any]] = {}  # read from the modules once the options are applied
        self.computed = 0  # full passes through the transformer's last block in the request running
        self.cached = {"found": False, "loaded_bytes": 0, "saved_bytes": 0}  # the compile cache's file
        self.dispatched: list[str] = []  # the attention ops one transformer call ran, as the profiler saw them

    def start(self) -> None:
        self.refuse_what_cannot_run()
        self.cached["found"] = bool(self.options.compile_cache) and Path(self.options.compile_cache).exists()
        super().start()
        self.apply()
        self.evidence = evidence(self.pipe, self.options)
        # the last block's output layer runs only when the block itself does: a step the cache skipped calls
        # the block (its hook answers) but not its layers
        last = self.pipe.transformer.single_transformer_blocks[-1].proj_out
        last.register_forward_hook(lambda *_: setattr(self, "computed", self.computed + 1))

    def apply(self) -> None:
        """Each option asked for, by the library that has it."""
        o, transformer = self.options, self.pipe.transformer
        if o.fuse_qkv:
            transformer.fuse_qkv_projections()
        if o.quantize:
            import torchao.quantization as tq

            tq.quantize_(transformer, getattr(tq, QUANTIZE[o.quantize])())
        if o.attention:
            from diffusers.models.attention_dispatch import _AttentionBackendRegistry as registry

            default = registry.get_active_backend()[0]
            transformer.set_attention_backend(ATTENTION[o.attention][0])  # on each of its attention processors,
            registry.set_active_backend(default)  # and as the process's default: other pipelines here keep theirs
            self.dispatched = self.attention_ops()
        if o.channels_last:
            self.pipe.vae.to(memory_format=torch.channels_last)
        if o.scheduler:
            from diffusers import DPMSolverMultistepScheduler

            self.pipe.scheduler = DPMSolverMultistepScheduler.from_config(
                self.pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2,
                prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True,
                time_shift_type="exponential")
        if o.cache:
            from diffusers.hooks import FirstBlockCacheConfig

            transformer.enable_cache(FirstBlockCacheConfig(threshold=o.cache))
        if o.compile:  # last: it compiles what the options above made of the modules, at their first call
            self.load_compile_cache()
            if o.regional:
                transformer.compile_repeated_blocks(mode=o.compile)
            else:
                transformer.compile(mode=o.compile)
            if o.compile_vae:
                self.pipe.vae.decoder.compile(mode=o.compile)

    def plain_options(self) -> str:
        """SPEC options of the plain pipeline this target optimizes: the same weights, dtype, device and text
        length (the unit suite and the ablation compare with it)."""
        return (f"{self.weights()},dtype={self.dtype_name},device={self.device},"
                f"max_sequence_length={self.max_sequence_length}")

    def attention_ops(self) -> list[str]:
        """The attention ops one small transformer call runs, from torch's profiler: what the dispatcher chose,
        not what was asked of it (before compilation and the step cache, which change neither)."""
        from torch.profiler import profile

        txt, vec, _ = self.encode(["a cat"])
        img = self.sampling.pack(self.sampling.get_noise([0], 32, 32, self.dtype).to(self.device))  # (1, 4, 64)
        with profile() as run:
            PipelineTarget.velocity(self, img, txt, vec, sigma=1.0, guidance=3.5, height=32, width=32)
        return sorted({e.name for e in run.events() if "attention" in e.name or "flash_attn" in e.name})

    def load_compile_cache(self) -> None:
        path = Path(self.options.compile_cache)
        if not self.options.compile_cache or not path.exists():
            return
        data = path.read_bytes()
        if torch.compiler.load_cache_artifacts(data) is None:  # torch logs why and carries on without it
            raise ValueError(f"compile_cache={str(path)!r}: not a compile cache torch {torch.__version__} can load "
                             "(see the warning above); delete it and the next start writes it anew")
        self.cached["loaded_bytes"] = len(data)

    def save_compile_cache(self) -> None:
        """Every artifact compiled or loaded in this process so far, replacing the file at once."""
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is None:
            return
        path = Path(self.options.compile_cache)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(artifacts[0])
        os.replace(partial, path)  # a reader sees the old file or the new one, never half of one
        self.cached["saved_bytes"] = len(artifacts[0])

    def refuse_what_cannot_run(self) -> None:
        """Unavailable naming the option, where this host cannot run it."""
        o, cuda = self.options, self.device.type == "cuda"
        if o.quantize == "fp8":
            if not cuda:
                raise Unavailable(f"quantize=fp8: float8 matmuls need a CUDA GPU; the device is {self.device}")
            capability = torch.cuda.get_device_capability(self.device)
            if capability < (8, 9):
                raise Unavailable(f"quantize=fp8: needs compute capability 8.9 or more (Ada, Hopper); "
                                  f"{torch.cuda.get_device_name(self.device)} has {capability[0]}.{capability[1]}")
        if o.attention:
            needs = ATTENTION[o.attention][1]
            if needs == "cuda" and not cuda:
                raise Unavailable(f"attention={o.attention}: a CUDA kernel; the device is {self.device}")
            if needs == "flash_attn" and (not cuda or importlib.util.find_spec("flash_attn") is None):
                raise Unavailable(f"attention={o.attention}: needs the flash-attn package (pip install "
                                  f"'fluxgate[gpu]') and a CUDA device; the device is {self.device}")
        if o.compile and COMPILE[o.compile] and not cuda:
            raise Unavailable(f"compile={o.compile}: captures CUDA graphs, which need a CUDA device; the device is "
                              f"{self.device} (compile=default or max-autotune-no-cudagraphs run here)")
        if o.compile and not cuda and shutil.which("g++") is None:
            raise Unavailable(f"compile={o.compile}: Inductor builds CPU kernels with g++, which is not on PATH")

    def run(self, request: GenerationRequest, output_type: str):
        if self.options.steps:
            request = dataclasses.replace(request, num_inference_steps=self.options.steps)
        return super().run(request, output_type)

    def velocity(self, *args, **kwargs):
        """One transformer call as the pipeline makes it; with the step cache on, a first step's: the cache
        starts afresh, so it computes every block, and is left afresh for the next request of another size."""
        transformer = self.pipe.transformer
        if not self.options.cache:
            return super().velocity(*args, **kwargs)
        transformer._reset_stateful_cache()
        try:
            with transformer.cache_context("cond"):
                return super().velocity(*args, **kwargs)
        finally:
            transformer._reset_stateful_cache()

    def render(self, request: GenerationRequest) -> GenerationResult:
        self.computed = 0
        graphs, seconds = compiled()
        result = super().render(request)
        scheduler = self.pipe.scheduler  # what this request ran, read from the scheduler, as the evidence is
        result.info.update(steps=len(scheduler.timesteps), full_steps=self.computed, sigmas=scheduler.sigmas.tolist())
        if self.options.compile:
            now = compiled()
            result.info.update(compiled_graphs=now[0] - graphs, compile_s=now[1] - seconds)
            if self.options.compile_cache and now[0] > graphs:
                self.save_compile_cache()
        return result

    def describe(self) -> dict:
        evidence = dict(self.evidence)
        if self.options.attention:  # set on every processor, and the op expected among those that ran
            ran = any(ATTENTION[self.options.attention][2] in op for op in self.dispatched)
            evidence["attention"] = {**evidence["attention"], "dispatched": self.dispatched}
            evidence["attention"]["applied"] *= ran
        if self.options.compile_cache:  # read now: a first start writes the file after its first request
            used = self.cached["loaded_bytes" if self.cached["found"] else "saved_bytes"] > 0
            evidence["compile_cache"] = {"applied": int(used), "of": 1, "path": self.options.compile_cache,
                                         **self.cached}
        return {**super().describe(), "options": dataclasses.asdict(self.options), "evidence": evidence}


def compiled() -> tuple[int, float]:
    """Graphs Dynamo has compiled in this process, and the seconds it took (its own counters)."""
    from torch._dynamo.utils import compilation_time_metrics, counters

    return counters["stats"]["unique_graphs"], sum(compilation_time_metrics.get("_compile.compile_inner", []))


def evidence(pipe, options: Options) -> dict[str, dict[str, Any]]:
    """For each option asked for (but steps, which each result's info shows), how many of the modules it is
    for now have it ("applied" of "of"), read from the modules, not from what was done to them: the unit suite
    checks that each option took effect on every one."""
    transformer, found = pipe.transformer, {}
    if options.fuse_qkv:
        attention = [m for m in transformer.modules() if hasattr(m, "fused_projections")]
        found["fuse_qkv"] = {"applied": sum(bool(m.fused_projections) for m in attention), "of": len(attention)}
    if options.quantize:
        linear = [m for m in transformer.modules() if isinstance(m, torch.nn.Linear)]
        kinds = Counter(type(m.weight).__name__ for m in linear if type(m.weight) is not torch.nn.Parameter)
        found["quantize"] = {"applied": sum(kinds.values()), "of": len(linear), "config": QUANTIZE[options.quantize],
                             "weights": dict(kinds)}  # torchao's tensor subclasses in place of Parameters
    if options.attention:
        backend = ATTENTION[options.attention][0]
        processors = [m.processor for m in transformer.modules() if getattr(m, "processor", None) is not None]
        chosen = [getattr(getattr(p, "_attention_backend", None), "value", None) for p in processors]
        found["attention"] = {"applied": chosen.count(backend), "of": len(processors), "backend": backend}
    if options.channels_last:
        convs = [m for m in pipe.vae.modules()  # a 1x1 kernel is laid out alike either way
                 if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
        found["channels_last"] = {"applied": sum(m.weight.is_contiguous(memory_format=torch.channels_last)
                                              for m in convs), "of": len(convs)}
    if options.scheduler:
        algorithm = pipe.scheduler.config.get("algorithm_type")
        found["scheduler"] = {"applied": int(algorithm == "dpmsolver++"), "of": 1,
                              "class": type(pipe.scheduler).__name__, "algorithm": algorithm}
    if options.cache:
        blocks = [*transformer.transformer_blocks, *transformer.single_transformer_blocks]
        hooked = [b for b in blocks if any(name.startswith("fbc_") for name in
                                           getattr(getattr(b, "_diffusers_hook", None), "hooks", {}))]
        found["cache"] = {"applied": len(hooked), "of": len(blocks), "threshold": options.cache}
    if options.compile:
        blocks = [m for m in transformer.modules() if type(m).__name__ in transformer._repeated_blocks]
        parts = {"regional": blocks if options.regional else [],
                 "compile_vae": [pipe.vae.decoder] if options.compile_vae else []}
        for name, modules in {"compile": parts["regional"] or [transformer], **parts}.items():
            if modules:  # nn.Module.compile() leaves its compiled forward here
                found[name] = {"applied": sum(m._compiled_call_impl is not None for m in modules),
                               "of": len(modules), "mode": options.compile, "cuda_graphs": COMPILE[options.compile]}
    return found
