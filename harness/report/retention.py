"""Forgetting over a group's seeds (pure: records' `forgetting` summaries in, one interval out).

A record's forgetting summary (harness.pipeline.forgetting.summarise) keeps, per retention set, the per-item
paired differences before - after. Over seeds they go through the report's one resampling scheme,
harness.analysis.stats.bootstrap: a seeds x items array per set, seeds and items resampled, the average
over the sets as the statistic.

Records written before the per-item differences were kept hold only each seed's mean and interval.
Averaging those intervals' bounds is not an interval of anything, so they are combined as a normal
approximation instead, marked `approximate`: each seed's item standard error (its interval's half
width / 1.96) squared and averaged, plus the variance of the seeds' means / k. That counts the
seed x item residual twice and the item variance as if no seed shared items: conservative.
"""
from __future__ import annotations

import math

import numpy as np

from harness.analysis import stats


def unit(summary) -> str:
    """'pts' for accuracy sets (before - after, in points), 'nats' for cross-entropy sets (after -
    before, nats per token; harness.pipeline.forgetting.summarise_loss). Positive is forgotten in both."""
    return "nats" if summary.measure == "loss" else "pts"


def _item_scores(summaries: list) -> list[np.ndarray] | None:
    """Per retention set, seeds x items of the per-item forgetting (100 * (before - after) for
    accuracy sets, after - before losses for cross-entropy sets); None unless every seed kept its
    per-item differences on the same sets and item counts."""
    sets = list(summaries[0].sets)
    key, scale = ("item_loss_diffs", 1.0) if unit(summaries[0]) == "nats" else ("item_diffs", 100.0)
    out = []
    for name in sets:
        rows = [s.sets.get(name, {}).get(key) for s in summaries]
        if any(r is None for r in rows) or len({len(r) for r in rows}) != 1 or not rows[0]:
            return None
        out.append(scale * np.asarray(rows, dtype=float))
    return out or None


def _approximate(summaries: list) -> dict | None:
    means = [s.forgetting_avg for s in summaries]
    bounds = [s.forgetting_avg_ci95 or [None, None] for s in summaries]
    if any(m is None for m in means) or any(None in b for b in bounds):
        return None
    k = len(means)
    item_var = sum(((hi - lo) / (2 * stats.Z95)) ** 2 for lo, hi in bounds) / k
    seed_var = float(np.var(means, ddof=1)) / k if k > 1 else 0.0
    mean, half = float(np.mean(means)), stats.Z95 * math.sqrt(item_var + seed_var)
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4),
            "seed_variance": k > 1, "approximate": True, "seeds": k}


def across_seeds(summaries: list[dict | None], seeds: list) -> dict | None:
    """The group's forgetting: mean over seeds and sets, 95% interval over seeds and items;
    None when a member has no forgetting summary."""
    if not summaries or any(not s for s in summaries):
        return None
    if len({unit(s) for s in summaries}) != 1:
        return None  # seeds measured differently (an old and a new suite): nothing to pool
    strata = _item_scores(summaries)
    if strata is None:
        approx = _approximate(summaries)
        return approx and {**approx, "unit": unit(summaries[0])}
    bounds = (-100.0, 100.0) if unit(summaries[0]) == "pts" else (-math.inf, math.inf)
    out = stats.bootstrap([stats.Scores.of(seeds, strata)], bounds=bounds)
    return {"mean": out["mean"], "low": out["low"], "high": out["high"], "seed_variance": out["seed_variance"],
            "approximate": False, "seeds": len(seeds), "unit": unit(summaries[0])}
