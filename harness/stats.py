"""Uncertainty for accuracies and differences between them (pure functions, numpy only).

- `wilson`: 95% Wilson score interval of one accuracy (k of n items): sane at 0/n and n/n, where
  the normal approximation gives [0, 0] or intervals outside [0, 100].
- `paired_bootstrap`: mean of per-item differences (before - after, method A - method B) with a
  percentile bootstrap interval, resampling items within each stratum (test set), seeded.
- `bootstrap_p`: the two-sided p-value of a zero mean difference under that bootstrap;
- `mcnemar_exact`: two-sided exact McNemar test on paired correctness (the binomial test on the
  items where exactly one side is right).
- `holm`: Holm-Bonferroni adjustment of a family of p-values.
- `mean_sd_ci`: mean, sample standard deviation and 95% t interval over seeds.
"""
from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

Z95 = NormalDist().inv_cdf(0.975)
# two-sided 95% Student t quantiles for small degrees of freedom (seed counts); normal beyond
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson interval of correct/n, in points (0-100)."""
    if n <= 0:
        return (math.nan, math.nan)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(100 * max(0.0, centre - half), 4), round(100 * min(1.0, centre + half), 4))


def paired_bootstrap(strata: list[list[float]], resamples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean over strata of each stratum's mean difference, with a percentile bootstrap interval that
    resamples the items of every stratum independently (each set keeps its size)."""
    strata = [np.asarray(s, dtype=float) for s in strata if len(s)]
    if not strata:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    point = float(np.mean([s.mean() for s in strata]))
    boot = np.zeros(resamples)
    for s in strata:
        boot += s[rng.integers(0, len(s), size=(resamples, len(s)))].mean(axis=1)
    boot /= len(strata)
    tail = (1 - level) / 2
    return {"mean": round(point, 4), "low": round(float(np.quantile(boot, tail)), 4),
            "high": round(float(np.quantile(boot, 1 - tail)), 4), "n": int(sum(len(s) for s in strata))}


def bootstrap_p(strata: list[list[float]], resamples: int = 4000, seed: int = 0) -> float:
    """Two-sided p-value of 'the mean over strata of the mean differences is 0', from the same
    stratified bootstrap as paired_bootstrap: twice the smaller tail of the resampled means at 0."""
    strata = [np.asarray(s, dtype=float) for s in strata if len(s)]
    if not strata or all(not s.any() for s in strata):
        return 1.0
    rng = np.random.default_rng(seed)
    boot = np.zeros(resamples)
    for s in strata:
        boot += s[rng.integers(0, len(s), size=(resamples, len(s)))].mean(axis=1)
    boot /= len(strata)
    return float(min(1.0, 2 * min((boot <= 0).mean(), (boot >= 0).mean())))


def mcnemar_exact(a: list[bool], b: list[bool]) -> dict:
    """Exact two-sided McNemar test of paired correctness `a` vs `b` on the same items."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must cover the same items")
    only_a = sum(1 for x, y in zip(a, b) if x and not y)
    only_b = sum(1 for x, y in zip(a, b) if y and not x)
    n = only_a + only_b
    k = min(only_a, only_b)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"only_a": only_a, "only_b": only_b, "p": p}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted = [0.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def t95(df: int) -> float:
    if df <= 0:
        return math.nan
    if df in T95:
        return T95[df]
    below = [d for d in T95 if d < df]
    return T95[max(below)] if df <= 30 else Z95


def mean_sd_ci(values: list[float]) -> dict:
    """Across seeds: mean, sample sd and a 95% t interval of the mean (None with one value)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"mean": None, "sd": None, "low": None, "high": None, "n": 0}
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return {"mean": mean, "sd": None, "low": None, "high": None, "n": 1}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    half = t95(len(vals) - 1) * sd / math.sqrt(len(vals))
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "n": len(vals)}
