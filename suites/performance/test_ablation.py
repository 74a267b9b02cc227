"""The ablation, for an optimized target: the plain pipeline against each of its options alone and against
all of them together, on the target's weights, dtype and device, each in a process of its own: the speed-up as
the median of paired ratios with its interval and interquartile range, the row's peak memory, and how far its
images are from the plain pipeline's. The profile may name the rows (`ablation = ["fuse_qkv=1", ...]`)."""
from __future__ import annotations

import numpy as np
import pytest

from harness.isolated import Isolated
from harness.memory import MemorySampler
from harness.metrics import mean_abs_diff, psnr
from harness.stats import quantile
from harness.timing import paired_ratios, timed_generate

MIB = 2**20


def rows_of(target, profile) -> list[str]:
    """The profile's rows, else each of the target's options alone and then all of them together."""
    return profile.get("ablation") or target.options.rows()


def test_ablation(target, make_request, profile, recorder):
    if not hasattr(target, "options"):
        pytest.skip(f"{target.name} is not an optimized target: it has no options to ablate")
    rows = rows_of(target, profile)
    if not rows:
        pytest.skip(f"{target.spec}: no options set and the profile names no rows, so nothing to ablate")
    same = target.plain_options()
    request, rounds = make_request("a red vintage car on a rainy street"), profile.get("speedup_runs")
    table = []
    with Isolated(f"pipeline:{same}") as plain:
        with MemorySampler(pid=plain.pid) as memory:
            reference = timed_generate(plain, request).images
        table.append({"row": "plain", "peak_host_mib": memory.peak_host / MIB})
        for row in rows:
            with Isolated(f"optimized:{same},{row}") as optimized, MemorySampler(pid=optimized.pid) as memory:
                ratios = paired_ratios(optimized, plain, request, rounds)
                images = optimized.generate(request).images
            peak = memory.peak_host / MIB
            speedup = recorder.estimate(f"ablation.{row}.speedup", quantile(ratios, 0.5), "x", better="higher")
            quality = {"psnr": psnr(images, reference), "mean_abs_diff": mean_abs_diff(images, reference)}
            recorder.metric(f"ablation.{row}.peak_host", peak, "MiB", better="lower")
            recorder.metric(f"ablation.{row}.psnr", quality["psnr"], "dB", better="higher")
            recorder.metric(f"ablation.{row}.mean_abs_diff", quality["mean_abs_diff"], "levels", better="lower")
            table.append({"row": row, "speedup": speedup.value, "interval": speedup.interval, "n": len(ratios),
                          "iqr": np.percentile(ratios, [25, 75]).tolist(), "peak_host_mib": peak,
                          **quality, "ratios": ratios})
    recorder.artifact("ablation.json", table)
