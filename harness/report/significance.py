"""Intervals, tests and power for the report, from the per-item scores in the predictions files.

Everything goes through one resampling scheme, harness.analysis.stats.bootstrap (seeds and items both
resampled, paired on items and, where the runs share seed values, on seeds; see its docstring):
- every set's cell: the mean over seeds with its 95% interval (`set_ci`; Wilson's score interval
  when every item scored the same on every seed, where the bootstrap has nothing to resample);
- the average (aggregate.averaged_family: a cloze average leaves BoolQ out) with its interval
  (`avg_ci`); a set's score is its standard metric under the scoring (aggregate.metric_of);
- against the reference method (LoRA by default) on the same items: the difference of averages,
  its interval and p-value, Holm-corrected over the m methods compared in one table (significant
  below 0.05), and the minimum detectable difference at 80% power (stats.mdd) from the difference's
  bootstrap standard error at Holm's worst-case level 0.05/m (`vs_reference`).

Groups whose predictions are not on disk (a W&B baseline, published rows) get no interval.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness.analysis import stats
from harness.report.aggregate import averaged_family, family_of, metric_of

ALPHA = 0.05
POWER = 0.8
COMPARABLE = ("model", "task", "train_set", "scoring", "eval_limit", "decoding", "eval_precision")
# the field of a predictions row that holds an item's outcome under each metric
OUTCOME = {"acc": "correct", "acc_norm": "correct_norm"}


def prediction_file(predictions_dir: Path, run_id: str, scoring: str, primary: str, name: str) -> Path:
    """The file harness.pipeline.runner wrote: <run>/<set>.jsonl for the run's eval.scoring, <run>/<scoring>/<set>.jsonl
    for a scoring of eval.also."""
    sub = "" if scoring == primary else f"{scoring}/"
    return predictions_dir / run_id / f"{sub}{name}.jsonl"


def item_outcomes(predictions_dir: Path, member: dict, sets: list[str], standard: bool = True) -> dict | None:
    """{set: [0/1 per item, in item order]} of one run under its scoring's metric (`standard`; else
    plain accuracy, what the record's `accuracy` counts), or None when a file, or the metric's field
    in it, is missing."""
    primary = (member.get("config") or {}).get("eval.scoring", member["scoring"])
    out = {}
    for name in sets:
        path = prediction_file(predictions_dir, member["run_id"], member["scoring"], primary, name)
        field = OUTCOME[metric_of(member["scoring"], name) if standard else "acc"]
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except OSError:
            return None
        if any(r.get(field) is None for r in rows):
            return None
        out[name] = [int(bool(r[field])) for r in sorted(rows, key=lambda r: r["index"])]
    return out


def average_sets(group: dict) -> list[str]:
    """The sets the group's average covers: the family's average under its scoring, else every set."""
    fam = averaged_family(family_of(group["task"]), group["scoring"])
    if fam and all(s in group["acc"] for s in fam.paper_average):
        return list(fam.paper_average)
    return sorted(group["acc"])


def group_scores(group: dict, members: list[dict], predictions_dir: Path) -> dict | None:
    """{set: stats.Scores (seeds x items, 0/1)} for every evaluated set, or None without predictions
    or when the seeds evaluated different items (no item-level pairing)."""
    sets = sorted(group["acc"])
    per_run = [item_outcomes(predictions_dir, m, sets) for m in members]
    if not per_run or any(p is None for p in per_run):
        return None
    if len({tuple(len(p[s]) for s in sets) for p in per_run}) != 1:
        return None
    seeds = [m["seed"] for m in members]
    return {s: stats.Scores.of(seeds, [np.array([p[s] for p in per_run])]) for s in sets}


def joined(scores: dict, sets: list[str]) -> stats.Scores:
    """One Scores of `sets` (a stratum each), in points."""
    first = scores[sets[0]]
    return stats.Scores(first.seeds, tuple(100.0 * scores[s].strata[0] for s in sets))


def difference(a: stats.Scores, b: stats.Scores, alpha: float) -> dict:
    """Average of a minus average of b on the same items (points), its interval, p and MDD."""
    res = stats.bootstrap([a, b], signs=(1.0, -1.0), bounds=(-100.0, 100.0))
    return {"diff": res["mean"], "low": res["low"], "high": res["high"], "se": res["se"], "p": res["p"],
            "p_bound": res["p_bound"], "resamples": res["resamples"], "seed_variance": res["seed_variance"],
            "paired_seeds": res["paired_seeds"], "mdd": round(stats.mdd(res["se"], alpha, POWER), 4),
            "alpha": alpha, "test": "two-level bootstrap (seeds x items)"}


def _annotate_group(g: dict, scores: dict | None) -> stats.Scores | None:
    """Cell and average intervals of one group; returns its average's Scores for the comparisons."""
    g["set_ci"], g["avg_ci"], g["vs_reference"] = {}, None, None
    if not scores:
        return None
    g["set_ci"] = {s: stats.cell_interval(v) for s, v in scores.items()}
    avg = joined(scores, average_sets(g))
    res = stats.bootstrap([avg], bounds=(0.0, 100.0))
    g["avg_ci"] = {"mean": res["mean"], "low": res["low"], "high": res["high"], "items": res["items"],
                   "seed_variance": res["seed_variance"]}
    return avg


def _compare_table(members: list[dict], averages: dict, reference: str) -> None:
    refs = [g for g in members if g["method"] == reference and averages[id(g)] is not None]
    if len(refs) != 1:
        return
    ref = refs[0]
    compared = [g for g in members if g is not ref and averages[id(g)] is not None
                and average_sets(g) == average_sets(ref)]
    if not compared:
        return
    alpha = ALPHA / len(compared)  # Holm's first step, its worst case: what the power is stated at
    results = [difference(averages[id(g)], averages[id(ref)], alpha) for g in compared]
    adjusted = stats.holm([r["p"] for r in results])
    # Holm is monotone in every p: an adjusted value that comes from a p stored as its upper bound
    # (the bound's own, or carried up by Holm's running maximum) is an upper bound too
    bounds = {a for a, r in zip(adjusted, results) if r["p_bound"]}
    for g, res, p_holm in zip(compared, results, adjusted):
        g["vs_reference"] = {**res, "reference": reference, "comparisons": len(compared), "p_holm": p_holm,
                             "p_holm_bound": p_holm in bounds, "significant": p_holm < ALPHA}


def annotate(groups: list[dict], members_of: dict, predictions_dir: Path, reference: str = "lora") -> None:
    """Add to every group its cells' and average's intervals ('set_ci', 'avg_ci') and, for groups
    with a reference-method group on the same items, the difference from it ('vs_reference')."""
    averages = {}
    for g in groups:
        scores = group_scores(g, members_of[id(g)], predictions_dir) if g["acc"] else None
        averages[id(g)] = _annotate_group(g, scores)
    tables: dict = {}
    for g in groups:
        tables.setdefault(tuple(g[k] for k in COMPARABLE), []).append(g)
    for members in tables.values():
        _compare_table(members, averages, reference)
