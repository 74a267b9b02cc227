"""Percentiles carry their sample count and an interval, and are gated only with the samples they need."""
from __future__ import annotations

import numpy as np
import pytest

from harness.record import Recorder
from harness.stats import min_samples, quantile


def test_samples_a_percentile_needs_before_it_is_bounded():
    # the largest of n samples bounds the q-quantile (95%) once q^n <= 0.05
    assert (min_samples(0.5), min_samples(0.95), min_samples(0.99)) == (5, 59, 299)
    assert quantile(np.arange(298), 0.99).high is None
    assert quantile(np.arange(299), 0.99).high == 298


def test_the_interval_is_of_order_statistics():
    e = quantile([0.5, 0.1, 0.3, 0.2, 0.4], 0.5)
    assert (e.value, e.n, e.low, e.high) == (0.3, 5, 0.1, 0.5)  # of five samples, only min and max bound it
    e = quantile(np.arange(1, 101), 0.5)
    assert (e.low, e.high) == (42, 59)  # ranks 42 and 59 of 100: the binomial's 5% and 95% points


def test_the_interval_covers_the_true_quantile_as_often_as_it_says():
    rng = np.random.default_rng(0)
    true_median, true_p95 = np.log(2), -np.log(0.05)  # of an exponential, as latencies skew
    cover = {0.5: 0, 0.95: 0}
    for _ in range(400):
        x = rng.exponential(size=80)
        for q, truth in ((0.5, true_median), (0.95, true_p95)):
            e = quantile(x, q)
            cover[q] += e.low <= truth <= e.high
    assert cover[0.5] / 400 >= 0.86 and cover[0.95] / 400 >= 0.86  # 90% intervals (each side 95%)


def test_the_recorder_keeps_count_and_interval(tmp_path):
    rec = Recorder("t", tmp_path)
    rec.percentiles("latency", [0.2, 0.1, 0.4, 0.3, 0.5])
    p50, p95, p99 = rec.recording.metrics
    assert (p50.name, p50.n, p50.interval, p50.min_n) == ("latency.p50", 5, [0.1, 0.5], 5)
    assert p99.name == "latency.p99" and p99.value == pytest.approx(0.496) and p99.interval[1] is None
    assert p99.min_n == 299
