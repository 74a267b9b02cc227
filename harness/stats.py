"""Percentiles with their sample count and a distribution-free confidence interval.

The interval of a quantile comes from order statistics: with n samples, the k-th smallest lies below the
true q-quantile with a binomial probability, so the bounds need no assumption about the distribution (no
normal latencies, no bootstrap noise). Each side holds with 95%, the pair with 90%.

A percentile is gated only when its upper bound is an observed sample: the largest of n samples bounds the
q-quantile from above with 95% confidence only once q^n <= 0.05. So p50 needs 5 samples, p95 59 and p99 299
(MLPerf asks its p99 runs for thousands of queries for the same reason); below that the value is reported,
marked, and not gated: the p99 of 5 samples is just their maximum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05  # on each side


def min_samples(q: float) -> int:
    """How many samples a q-quantile needs before the largest of them bounds it (q^n <= ALPHA)."""
    return max(1, math.ceil(math.log(ALPHA) / math.log(q))) if 0 < q < 1 else 1


@dataclass(frozen=True)
class Estimate:
    value: float
    n: int
    low: float | None               # None: the samples cannot bound it from below
    high: float | None              # None: nor from above (too few samples for this quantile)
    min_n: int = 1                  # samples needed to gate it

    @property
    def interval(self) -> list[float | None]:
        return [self.low, self.high]


def quantile(samples, q: float) -> Estimate:
    """The q-quantile (linear interpolation, as numpy's percentile) with its order-statistic interval."""
    from scipy.stats import binom

    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if not n:
        raise ValueError("a percentile needs at least one sample")
    cdf = binom.cdf(np.arange(n), n, q)   # cdf[k] = P(fewer than k + 1 samples fall below the quantile)
    # x[k] (0-based) lies above the quantile when at most k samples fall below it: P = cdf[k]
    below = [k for k in range(n) if cdf[k] <= ALPHA]
    # x[k] lies below it when at least k + 1 samples do: P = 1 - cdf[k]
    above = [k for k in range(n) if 1 - cdf[k] <= ALPHA]
    return Estimate(float(np.percentile(x, 100 * q)), n, float(x[max(below)]) if below else None,
                    float(x[min(above)]) if above else None, min_samples(q))
