"""The settings suites read from a profile's [settings]: every knob named once, with a default that says why.

A profile that names a setting not here is refused (a typo would otherwise be ignored and the default used
without a word), and a suite that asks for one not here fails at once.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Settings:
    # requests: small enough for CI's two cores with the tiny presets
    size: int = 256                     # pixels, square
    steps: int = 4
    warmup: int = 1                     # requests before timing: the first one pays for lazy initialisation
    latency_runs: int = 5               # warm latency samples; p95 needs 59 and p99 299 to be gated (95% bound)
    image_fit: str = "preferred"        # an edit's input at Kontext's ~1 MP (harness.images.FITS), as diffusers
                                        # sizes it by default; "request": at the request's size
    # load tests: small requests, so the engine, not the model, is what is exercised
    load_size: int = 64
    load_steps: int = 1
    load_timeout: float = 60.0          # seconds a load test waits for its last answers
    throughput_requests: int = 8        # answered back to back with the target kept busy
    max_concurrency: int = 4            # the ramp: 1, 2, 4, ... up to this
    requests_per_level: int = 8
    open_rate: float = 5.0              # requests per second for open_duration seconds
    open_duration: float = 3.0
    open_poisson: bool = True           # exponential gaps, as independent users send
    overflow_extra: int = 6             # a burst this much over what the target admits
    overflow_size: int = 128
    overflow_steps: int = 2
    memory_requests: int = 30           # requests served while memory is watched for a leak
    # the capacity search: from half the rate one request at a time is served at (or capacity_start), then
    # x capacity_factor per step of capacity_step seconds, until load is shed or capacity_max is passed
    capacity_start: float | None = None
    capacity_factor: float = 1.5
    capacity_step: float = 2.0
    capacity_max: float = 256.0
    capacity_p99_bound: float = 1.0     # seconds: the highest rate served with p99 under it is reported as well
                                        # (MLPerf's Server scenario); a GPU profile sets its service's bound
    # the load engines side by side (--load-engine locust): fluxgate's and Locust's, taking turns at each rate
    engine_rates: list[float] = field(default_factory=lambda: [5.0, 10.0, 20.0, 40.0, 80.0, 160.0])
    engine_step: float = 2.0            # seconds at each rate, for each engine
    # scaling: latency against each dimension, a line fitted through the medians
    scaling_resolution: list[int] = field(default_factory=lambda: [64, 128, 256])   # pixels, square
    scaling_steps: list[int] = field(default_factory=lambda: [1, 2, 4])
    scaling_batch: list[int] = field(default_factory=lambda: [1, 2, 4])
    scaling_runs: int = 2
    speedup_runs: int = 5               # paired rounds against --baseline-target, and in each ablation row
    # the ablation (an optimized target): rows of options, each against the plain pipeline on the same weights;
    # empty: each of the target's options alone, then all of them together
    ablation: list[str] = field(default_factory=list)
    cold_start_timeout: float = 600.0   # seconds for a fresh process to give its first image
    benchmark_rounds: int = 5
    # quality
    quality_prompts: int = 4
    gallery_prompts: int = 8            # the worst of them by PSNR shown in the report's gallery (size)
    consistency_runs: int = 3
    guidance_scales: list[float] = field(default_factory=lambda: [1.0, 3.5, 7.0])
    # learned metrics, from weights on disk (harness/metrics/weights.py)
    lpips_net: str = "alex"             # "vgg" is closer to people's judgements as a loss, alex as a metric
    clip_model: str = "ViT-L-14"        # open_clip's name, or "local-dir:FOLDER" (config and weights)
    clip_pretrained: str = "openai"     # an open_clip tag, or a weights file; seed 000's CLIP score is OpenAI's
    fid_features: int = 2048            # InceptionV3's pool, as published FIDs; 64, 192 or 768 take earlier
                                        # layers: cheaper, and steadier over the few images a CI run has
    # edge cases
    edge_timeout: float = 30.0          # seconds before a request counts as hung
    hypothesis_examples: int = 25
    # hostile clients (HTTP targets)
    oversize_body: int = 20 * 2**20     # bytes: far past any sane request, small enough to send in a blink
    oversize_upload: int = 200 * 2**20  # bytes of an image upload: refused from its length, never read
    abandon_steps: int = 1000           # a request its client walks away from: the contract's most steps, so a
                                        # service that does not cancel it stays busy for minutes
    abandon_after: float = 1.0          # seconds the client waits before it walks away
    cancel_grace: float = 2.0           # seconds the service may take to come free after that: one step at
                                        # the profile's size, with room
    slow_client_limit: float = 15.0     # seconds a connection that sends nothing, or trickles, may be held


NAMES = [f.name for f in dataclasses.fields(Settings)]
