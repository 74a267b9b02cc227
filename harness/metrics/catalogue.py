"""Every metric the suites record, defined once: its name, unit, which direction is better, and how far a
baseline comparison lets it move in absolute terms (beside the profile's relative tolerance), so that a
metric whose baseline is 0 or near it is not judged by a relative tolerance alone.

A `*` in a name stands for a part that varies (`ramp.c*.throughput`: c1, c2, c4, ...). A profile that names a
metric matching nothing here is refused, naming the closest known name; a profile's own `[metrics]` table
adds the names of metrics that suites of one's own record.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Definition:
    name: str
    unit: str
    better: str | None          # "lower" | "higher" | None (informational)
    absolute: float = 0.0       # baseline slack in the metric's unit
    doc: str = ""
    category: str = ""          # the suite that records it
    merge: str = ""             # how one test's values from several shards make the whole's (reports/merge.py):
                                # mean (weighted by n), min, max, features (FID and CMMD from the features the
                                # shards kept), over_floor (the merged distance over the merged floor); "": none


def _suite(category: str, definitions: list[Definition]) -> list[Definition]:
    return [dataclasses.replace(d, category=category) for d in definitions]


def _percentiles(prefix: str, doc: str, absolute: float = 0.002) -> list[Definition]:
    return [Definition(f"{prefix}.{p}", "s", "lower", absolute, f"{doc}, {p}") for p in ("p50", "p95", "p99")]


def _floor(metric: str, merge: str) -> list[Definition]:
    return [Definition(f"{metric}.floor", "", None, doc=f"{metric} between the reference's images and the same "
                       "images rendered as the first of a batch of two: the noise floor (metrics/floor.py)",
                       merge=merge),
            Definition(f"{metric}.over_floor", "x", "lower", 0.5, f"{metric} as a multiple of its floor",
                       merge="over_floor")]


LEVELS = 1.0  # one uint8 level: rounding alone can move an image this much

MEMORY_PEAKS = [
    Definition("memory.host_peak", "MiB", "lower", 16, "resident memory of the target's process (the oracle and "
               "the baseline target run in processes of their own)"),
    Definition("memory.device_peak", "MiB", "lower", 16, "the target's GPU as NVML sees it (every process on it)"),
]

PERFORMANCE = [
    *_percentiles("latency", "warm end-to-end latency of sequential requests"),
    Definition("throughput", "images/s", "higher", 0.01, "images per second with the target kept busy at its "
               "concurrency (a closed loop), first send to last answer"),
    Definition("throughput.sequential", "images/s", "higher", 0.01, "1 / mean latency of one request at a time"),
    Definition("cold_start", "s", "lower", 0.1, "a fresh process (or the session's first request) to its "
               "first image"),
    *[Definition(f"cold_start.{part}", "s", "lower", 0.1, f"cold start: {part}")
      for part in ("interpreter", "imports", "device", "load", "first_request", "warm", "excess")],
    *[Definition(f"compile.{phase}.{how}", "s", "lower", 0.1, f"a compiling target's {what} in a fresh process "
                 f"with an empty Inductor cache, {how} (the compile cache file "
                 f"{'loaded' if how == 'cached' else 'absent'})")
      for phase, what in (("cold_start", "cold start"), ("first_request", "first request"))
      for how in ("uncached", "cached")],
    Definition("compile.cache_saving", "", "higher", 0.05, "1 - cached / uncached first request: the share of "
               "compilation the compile cache saves"),
    Definition("scaling.resolution.slope", "s/MP", "lower", 0.002, "latency per megapixel"),
    Definition("scaling.steps.slope", "s/step", "lower", 0.002, "latency per denoising step"),
    Definition("scaling.batch.slope", "s/image", "lower", 0.002, "latency per extra image in a request"),
    Definition("scaling.*.intercept", "s", None, doc="the fitted line at zero"),
    Definition("scaling.*.r2", "", None, doc="how straight the line is"),
    *MEMORY_PEAKS,
    Definition("memory.gpu_peak", "MiB", "lower", 16, "torch's peak allocation on the target's own device"),
    Definition("memory.per_extra_image", "MiB", "lower", 16, "peak growth from 1 to 2 images per request"),
    Definition("energy.joules_per_image", "J", "lower", 1.0, "GPU board energy per image over warm requests "
               "(NVML's counter)"),
    Definition("energy.gpu_utilisation", "%", "higher", 2.0, "mean share of time a kernel ran while they did"),
    Definition("edit.latency_ratio.r*", "x", "lower", 0.05, "an edit's latency over text to image's at the same "
               "size r x r: median of paired ratios"),
    Definition("speedup", "x", "higher", 0.02, "median of paired ratios, baseline target time / target time"),
    Definition("ablation.*.speedup", "x", "higher", 0.02, "an ablation row (an optimized target's options) "
               "against the plain pipeline on the same weights: median of paired ratios"),
    Definition("ablation.*.peak_host", "MiB", "lower", 16, "resident memory of the row's process"),
    Definition("ablation.*.psnr", "dB", "higher", 0.5, "the row's image against the plain pipeline's"),
    Definition("ablation.*.mean_abs_diff", "levels", "lower", 0.1, "the row's image against the plain "
               "pipeline's"),
    Definition("benchmark.median", "s", None, doc="pytest-benchmark's median"),
    Definition("benchmark.iqr", "s", None, doc="pytest-benchmark's interquartile range"),
]

INTEGRATION = [
    Definition("latency.single", "s", None, doc="one end-to-end request, cold or warm as it came"),
    Definition("batch.max_abs_diff", "levels", "lower", LEVELS, "a batch against the same requests one by one"),
    Definition("seed.repeat_max_abs_diff", "levels", "lower", LEVELS, "the same seed twice"),
    Definition("seed.other_mean_abs_diff", "levels", "higher", LEVELS, "another seed"),
    Definition("guidance.mean_abs_diff", "levels", "higher", LEVELS, "guidance 1 against 7"),
    Definition("equivalence.max_abs_diff", "levels", "lower", LEVELS, "the worst pixel against the reference"),
    Definition("equivalence.mean_abs_diff", "levels", "lower", 0.1, "the mean pixel difference against the "
               "reference: noise that PSNR tolerates moves it"),
    Definition("equivalence.channel_shift", "levels", "lower", 0.1, "the largest per-channel mean difference "
               "against the reference: a colour cast"),
    Definition("equivalence.psnr", "dB", "higher", 0.5),
    Definition("equivalence.ssim", "", "higher", 0.001),
    Definition("edit.input_mean_abs_diff", "levels", "higher", LEVELS, "an edit against the same edit of the "
               "input turned half round: the input image decides the edit"),
    Definition("success_rate", "", "higher", doc="share of the smoke prompts that gave an image"),
    Definition("lora.scale0_max_abs_diff", "levels", "lower", LEVELS, "a LoRA at strength 0 against none"),
    Definition("lora.scale1_mean_abs_diff", "levels", "higher", LEVELS, "a LoRA at strength 1 against none"),
    Definition("lora.restored_max_abs_diff", "levels", "lower", LEVELS, "the model after a LoRA against before"),
]

QUALITY = [
    Definition("quality.psnr.mean", "dB", "higher", 0.5, merge="mean"),
    Definition("quality.psnr.min", "dB", "higher", 0.5, merge="min"),
    Definition("quality.ssim.mean", "", "higher", 0.001, merge="mean"),
    Definition("quality.ssim.min", "", "higher", 0.001, merge="min"),
    Definition("quality.mean_abs_diff.max", "levels", "lower", 0.1, "the worst prompt's mean pixel difference",
               merge="max"),
    Definition("quality.channel_shift.max", "levels", "lower", 0.1, "the worst prompt's colour cast", merge="max"),
    Definition("edit.identity.ssim", "", "higher", 0.01, "an edit asked to change nothing against its input: "
               "what of the input survives (a trained Kontext keeps most; random weights none)"),
    Definition("edit.identity.psnr", "dB", "higher", 0.5, "the same, as PSNR"),
    Definition("edit.identity.lpips", "", "lower", 0.005, "the same, as LPIPS (0: the input kept whole)"),
    Definition("quality.consistency.max_abs_diff", "levels", "lower", LEVELS, "the same request repeated"),
    Definition("quality.guidance.min_step", "levels", "higher", LEVELS, "the smallest change between guidance "
               "scales in a row"),
    Definition("quality.lpips.mean", "", "lower", 0.005, "LPIPS against the reference, the prompts' mean: 0 is "
               "identical, about 0.1 a difference people notice", merge="mean"),
    Definition("quality.lpips.max", "", "lower", 0.005, "LPIPS against the reference, the worst prompt", merge="max"),
    Definition("clip_score", "", "higher", 0.5, "the target's images against their prompts, mean over prompts "
               "(torchmetrics' convention: 100 x max(cosine, 0))", merge="mean"),
    Definition("clip_score.reference", "", None, doc="the reference's images against the same prompts", merge="mean"),
    Definition("clip_score.delta", "", "higher", 0.5, "the target's CLIP score less the reference's, per prompt, "
               "mean: below 0, the target follows its prompts less well", merge="mean"),
    Definition("quality.cmmd", "", "lower", 0.05, "CMMD x 1000 between the target's and the reference's image "
               "sets (CLIP embeddings, Gaussian kernel, unbiased: about 0 for one distribution)", merge="features"),
    Definition("quality.fid", "", "lower", 1.0, "FID between the target's and the reference's image sets "
               "(InceptionV3 pool features; biased upwards at small sets: compare with a baseline)", merge="features"),
    *_floor("quality.lpips", "mean"), *_floor("quality.cmmd", "features"), *_floor("quality.fid", "features"),
]

UNIT = [
    Definition("unit.text.pooled_dim", "", None),
    Definition("unit.text.context_dim", "", None),
    Definition("unit.velocity_rel_error", "", "lower", 1e-4, "an optimized target's transformer call against the "
               "plain pipeline's on the same weights and inputs: |got - plain| / |plain|, the worse of two sigmas"),
]

STRESS = [
    Definition("*.answers.*", "requests", None, doc="how a load test's requests ended, by kind"),
    Definition("memory.host_per_request", "MiB/request", "lower", 0.5, "host memory kept per request served "
               "(a leak): the slope of resident memory against requests answered"),
    Definition("memory.device_per_request", "MiB/request", "lower", 0.5, "device memory kept per request"),
    *MEMORY_PEAKS,  # under sustained load as well as for one request
    *[dataclasses.replace(d, better=None) for d in _percentiles("ramp.c*.latency", "closed-loop latency at "
                                                                 "concurrency c (informational: the ramp's shape)")],
    Definition("ramp.c*.throughput", "images/s", "higher", 0.01, "closed-loop throughput at concurrency c"),
    *_percentiles("edit_load.latency", "closed-loop latency of edits, each uploading its own input"),
    Definition("edit_load.throughput", "images/s", "higher", 0.01, "edits per second kept busy"),
    *_percentiles("open_loop.latency", "open-loop latency from each request's scheduled time"),
    Definition("open_loop.throughput", "images/s", "higher", 0.01),
    Definition("open_loop.late_fraction", "", "lower", 0.01, "sends that started later than their slack"),
    Definition("open_loop.success_rate", "", "higher"),
    Definition("capacity.sustained_rate", "requests/s", "higher", doc="the highest open-loop rate served in full"),
    Definition("capacity.shed_rate", "requests/s", "higher", doc="the first rate at which load was shed"),
    Definition("capacity.p99_bounded_rate", "requests/s", "higher", doc="the highest rate served in full with p99 "
               "latency under the profile's capacity_p99_bound (MLPerf's Server criterion); 0: none"),
    Definition("capacity.p99_bounded_rate.p99", "s", None, doc="the p99 latency at that rate, with its samples"),
    Definition("engines.*.valid_rate", "requests/s", "higher", doc="the highest rate a load engine sent with under "
               "1% of its sends late"),
    *[dataclasses.replace(d, better=None) for d in _percentiles("engines.*.latency", "the server's latency as "
                                                                "one engine measured it, at a rate both kept up with")],
    Definition("engines.locust.reported.p*", "s", None, doc="Locust's own report of that latency: rounded to two "
               "significant digits, from the send"),
]

EDGE_CASE = [
    Definition("edge.prompts_served", "prompts", None),
    Definition("edge.odd_inputs_edited", "inputs", None, doc="tiny, strip-shaped and large input images edited"),
    Definition("edge.property.*", "requests", None, doc="hypothesis' requests served and refused"),
    Definition("hostile.oversize_refused", "s", "lower", 0.5, "seconds to refuse a body past the size limit"),
    Definition("hostile.upload_refused", "s", "lower", 0.5, "seconds to refuse an image upload past the size "
               "limit"),
    Definition("hostile.freed_after_abandon", "s", "lower", 0.5, "the next request's latency after three clients "
               "walked away from the longest requests: one step's wait where work is cancelled"),
    Definition("hostile.quick_alone", "s", None, doc="that request's latency on an idle server, to compare"),
    Definition("hostile.held.*", "s", "lower", 1.0, "seconds a silent or trickling connection was held open"),
]

SUITES = {"unit": UNIT, "integration": INTEGRATION, "performance": PERFORMANCE, "quality": QUALITY, "stress": STRESS,
          "edge_case": EDGE_CASE}
CATALOGUE: list[Definition] = [d for category, defs in SUITES.items() for d in _suite(category, defs)]


def find(name: str, extra: list[Definition] = ()) -> Definition | None:
    """The definition of a recorded metric name."""
    defs = [*extra, *CATALOGUE]
    return next((d for d in defs if d.name == name), None) or \
        next((d for d in defs if fnmatch.fnmatchcase(name, d.name)), None)


def known(pattern: str, extra: list[Definition] = ()) -> bool:
    """Whether a profile's name or glob can match a metric some suite records."""
    return any(fnmatch.fnmatchcase(d.name, pattern) or fnmatch.fnmatchcase(pattern, d.name)
               for d in [*extra, *CATALOGUE])


def categories(pattern: str, extra: list[Definition] = ()) -> set[str]:
    """The suites that record what a profile's name or glob can match (a metric of one's own: none known)."""
    return {d.category for d in [*extra, *CATALOGUE]
            if d.category and (fnmatch.fnmatchcase(d.name, pattern) or fnmatch.fnmatchcase(pattern, d.name))}


def closest(pattern: str, extra: list[Definition] = ()) -> str | None:
    """The known metric name nearest a misspelt one."""
    return closest_of(pattern, [d.name for d in [*extra, *CATALOGUE]])


def closest_of(word: str, known: list[str]) -> str | None:
    match = difflib.get_close_matches(word, known, n=1, cutoff=0.5)
    return match[0] if match else None
