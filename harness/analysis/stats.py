"""Uncertainty for accuracies and differences between them.

One resampling scheme for every interval and test the report prints (`bootstrap`): a two-level
bootstrap over training seeds and test items. A configuration's scores are a seeds x items array
per test set, the same items for every seed (a crossed design). The statistic (a set's accuracy,
the mean over sets, a difference of those) is split as a two-way random-effects model splits it:
item means over the seeds, plus each seed's effect (its mean minus the grand mean). Each resample

- draws the items of every set with replacement, within the set (each set keeps its size), and
  averages the item means over them: this carries the item variance and, once, the seed x item
  residual;
- draws the seeds with replacement and adds the mean of their effects, each effect scaled so that
  this part's variance is the seed component of variance estimated from the data: the sample
  variance of the seeds' means, less what the residual puts into it (MS_residual / items, the
  moment estimate of a two-way random-effects ANOVA, floored at 0), times k/(k-1) because drawing k
  of k seeds keeps only (k-1)/k of their variance (Davison & Hinkley 1997, sec. 3.8: resampling
  shrunken cluster effects). Resampling the raw seeds x items rows and columns instead (Owen's
  pigeonhole bootstrap) counts the residual twice: about 30% too wide on 0/1 scores.

The variance is then (up to that floor) unbiased for items, seeds and their interaction. With one seed there is no
seed level: the interval covers items only, and `seed_variance` is False (tables print "seed
variance not measured"). With few seeds the seed component is estimated from k-1 degrees of
freedom and the percentile interval cannot know how uncertain that estimate is: simulated on 0/1
scores (40 items x 4 sets) its 95% interval covered 96% when seeds do not matter, ~87-91% when they
add 5 points of sd, 73% (2 seeds) to 87% (5 seeds) when seeds dominate. More seeds are the remedy.

Differences (method A - method B; before - after): the same item draw for both sides (paired on
items). When both sides ran the same seed values, the difference is taken seed by seed (seed 1 of
A minus seed 1 of B, whose training data order is the same) and resampled as one configuration
(paired on seeds); otherwise each side's seed effects are drawn independently (unpaired on seeds,
still paired on items). Interval: percentile. p-value (two-sided, of a zero difference): the share
of resampled statistics at least as far from the estimate as the estimate is from 0 (the centred
bootstrap test, Hall & Wilson 1991). When none of the B resamples is that far, p < 1/B: stored as
the upper bound 1/B with `p_bound` set and printed "< 0.0005" for B = 2000, never 0.

Library statistics where a library has them: `wilson` (statsmodels' Wilson score interval, the
interval of a cell the bootstrap cannot resample: every item and seed scored the same),
`mcnemar_exact` (statsmodels, the regression gate's paired test), `holm` (statsmodels),
`t95` (scipy's t quantile), `mdd` (the minimum detectable difference of a design, normal quantiles
from scipy).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm, t as student_t
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

Z95 = float(norm.ppf(0.975))
RESAMPLES = 2000
_CELLS_PER_CHUNK = 2_000_000  # resamples x items held at once (16 MB per float64 array)


def wilson(correct: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of correct/n, in points (0-100): sane at 0/n and n/n, where a
    percentile bootstrap has nothing to resample and the normal approximation gives [0, 0]."""
    if n <= 0:
        return (math.nan, math.nan)
    low, high = proportion_confint(correct, n, alpha=1 - level, method="wilson")
    return (round(100 * float(low), 4), round(100 * float(high), 4))


def mcnemar_exact(a: list[bool], b: list[bool]) -> dict:
    """Exact two-sided McNemar test of paired correctness `a` vs `b` on the same items."""
    if len(a) != len(b):
        raise ValueError("paired outcomes must cover the same items")
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    table = [[int((a & b).sum()), int((a & ~b).sum())], [int((~a & b).sum()), int((~a & ~b).sum())]]
    p = 1.0 if table[0][1] + table[1][0] == 0 else float(mcnemar(table, exact=True).pvalue)
    return {"only_a": table[0][1], "only_b": table[1][0], "p": min(1.0, p)}


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order."""
    if not pvalues:
        return []
    return [float(p) for p in multipletests(pvalues, method="holm")[1]]


def t95(df: float) -> float:
    """Two-sided 95% Student t quantile (any df, fractional ones included)."""
    return math.nan if df <= 0 else float(student_t.ppf(0.975, df))


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


def mdd(se: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable difference: the true difference a two-sided test at level `alpha` finds
    with probability `power`, for an estimate with standard error `se` (normal approximation):
    MDD = (z_{1-alpha/2} + z_{power}) * SE. With alpha 0.05 and power 0.8, 2.80 standard errors.
    `se` is the paired difference's bootstrap standard error, so it carries the design: items,
    seeds (their spread estimated from the data) and the pairing."""
    return float((norm.ppf(1 - alpha / 2) + norm.ppf(power)) * se)


def p_text(p: float, bound: bool = False) -> str:
    """0.012, or '< 0.0005' for a p-value stored as the upper bound 1/B."""
    if bound:
        return f"< {p:.2g}"
    return f"{p:.2g}" if p < 0.01 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


# ---- the two-level bootstrap -------------------------------------------------------------------

@dataclass(frozen=True)
class Scores:
    """One configuration's per-item scores: for every stratum (test set) a seeds x items array, its
    rows in the order of `seeds`. Every side of a comparison has the same strata and item counts."""
    seeds: tuple
    strata: tuple

    @classmethod
    def of(cls, seeds, strata) -> "Scores":
        return cls(tuple(seeds), tuple(np.atleast_2d(np.asarray(a, dtype=float)) for a in strata))


def _paired_on_seeds(sides: list[Scores], signs) -> tuple[list[Scores], tuple, bool]:
    """When every side ran the same (distinct) seed values: one side holding the signed sum of the
    sides' scores, seed matched with seed (their difference, for (1, -1)); else the sides as given."""
    keys = [list(map(str, s.seeds)) for s in sides]
    first = keys[0]
    if len(sides) < 2 or len(set(first)) != len(first) or any(sorted(k) != sorted(first) for k in keys):
        return sides, tuple(signs), False
    strata = tuple(sum(sign * a[[k.index(x) for x in first]] for sign, a, k in zip(signs, column, keys))
                   for column in zip(*(s.strata for s in sides)))
    return [Scores(sides[0].seeds, strata)], (1.0,), True


def _seed_effects(side: Scores) -> np.ndarray:
    """Each seed's effect on the statistic (its mean over strata minus the grand one), shrunk so the
    bootstrap's seed variance is the estimated seed component of variance (see the module doc)."""
    k = len(side.seeds)
    if k < 2:
        return np.zeros(1)
    effects = np.mean([a.mean(axis=1) - a.mean() for a in side.strata], axis=0)
    between = float(effects @ effects) / (k - 1)  # sample variance of the seeds' means
    # what the seed x item residual adds to `between`: sum over strata of MS_residual / n, / strata^2
    noise = sum(_residual_ms(a) / a.shape[1] for a in side.strata) / len(side.strata) ** 2
    if between <= 0:
        return effects
    scale = math.sqrt(k / (k - 1) * max(0.0, between - noise) / between)
    return scale * effects


def _residual_ms(a: np.ndarray) -> float:
    """Two-way (seed x item) residual mean square of one stratum (0 with one item)."""
    k, n = a.shape
    if n < 2:
        return 0.0
    resid = a - a.mean(axis=1, keepdims=True) - a.mean(axis=0, keepdims=True) + a.mean()
    return float((resid ** 2).sum()) / ((k - 1) * (n - 1))


def _seed_weights(rng, k: int, b: int) -> np.ndarray:
    """b draws of k seeds with replacement, as weights (how often each seed was drawn / k)."""
    if k == 1:
        return np.ones((b, 1))
    return rng.multinomial(k, np.full(k, 1.0 / k), size=b) / k


def _resampled(sides: list[Scores], signs, resamples: int, seed: int) -> np.ndarray:
    """The statistic on every resample: items drawn within each stratum (one draw for every side),
    plus each side's seed effects drawn with replacement."""
    rng = np.random.default_rng(seed)
    item_means = [sum(sign * s.strata[t].mean(axis=0) for sign, s in zip(signs, sides))
                  for t in range(len(sides[0].strata))]
    effects = [_seed_effects(s) for s in sides]
    out = np.zeros(resamples)
    chunk = max(1, _CELLS_PER_CHUNK // max(len(m) for m in item_means))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        part = np.zeros(b)
        for means in item_means:
            items = rng.integers(0, len(means), size=(b, len(means)))
            part += means[items].mean(axis=1) / len(item_means)
        for sign, eff in zip(signs, effects):
            part += sign * (_seed_weights(rng, len(eff), b) @ eff)
        out[start:start + b] = part
    return out


def bootstrap(sides: list[Scores], signs: tuple = (1.0,), resamples: int = RESAMPLES, seed: int = 0,
              level: float = 0.95, bounds: tuple = (-math.inf, math.inf)) -> dict:
    """The two-level bootstrap of sum_j signs[j] * (mean over strata of side j's mean score): one
    side for a cell or an average, (A, B) with signs (1, -1) for a difference. Returns the estimate,
    the percentile interval (cut to `bounds`, the values the statistic can take: the additive seed
    and item parts can step outside 0-100, the true value cannot, so cutting costs no coverage), the
    bootstrap standard error, the two-sided p-value of 0 (with `p_bound` when it is the upper bound
    1/B), and what was resampled."""
    if len(signs) != len(sides) or not sides:
        raise ValueError("one sign per side")
    shapes = [[a.shape[1] for a in s.strata] for s in sides]
    if any(sh != shapes[0] for sh in shapes) or not shapes[0] or min(shapes[0]) == 0:
        raise ValueError(f"sides must hold the same non-empty strata of items: {shapes}")
    seeds = [len(s.seeds) for s in sides]
    sides, signs, paired = _paired_on_seeds(list(sides), signs)
    point = float(sum(sign * np.mean([a.mean() for a in s.strata]) for sign, s in zip(signs, sides)))
    boot = _resampled(sides, signs, resamples, seed)
    tail = (1 - level) / 2
    low, high = np.clip(np.quantile(boot, [tail, 1 - tail]), *bounds)
    far = int((np.abs(boot - point) >= abs(point) - 1e-9).sum())  # as far from the estimate as 0 is
    return {"mean": round(point, 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "se": round(float(boot.std(ddof=1)), 4), "p": max(far, 1) / resamples, "p_bound": far == 0,
            "resamples": resamples, "items": int(sum(shapes[0])), "seeds": seeds,
            "seed_variance": min(seeds) >= 2, "paired_seeds": paired}


def cell_interval(scores: Scores, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """A single test set's accuracy over seeds and items (points, scores 0/1): the two-level
    bootstrap, or, when every item scored the same on every seed (0/40, 40/40: nothing to resample,
    the bootstrap would say +-0), Wilson's interval on the items, with `method` saying which."""
    out = bootstrap([Scores(scores.seeds, tuple(100.0 * a for a in scores.strata))], resamples=resamples, seed=seed,
                    bounds=(0.0, 100.0))
    a = scores.strata[0]
    if a.min() < a.max():
        return {**out, "method": "bootstrap"}
    low, high = wilson(int(round(a[0].sum())), a.shape[1])  # items, not items x seeds: seeds repeat items
    return {**out, "low": low, "high": high, "method": "wilson"}
