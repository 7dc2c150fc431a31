"""Intervals and significance for the report, from the per-item correctness in the predictions files.

For a group of runs (one configuration, one or more seeds) and the test sets of its average:
- every set's accuracy, and its average (the family's paper average, else every evaluated set), with
  a 95% bootstrap interval over items, resampled within each set (each item's correctness averaged
  over the seeds first: the interval is about the items, the seeds' spread is shown beside it);
- against the reference method (LoRA by default) on the same items: the difference of averages with
  a 95% paired bootstrap interval and a p-value (exact McNemar on the pooled items when both sides
  have one seed; otherwise the paired bootstrap's two-sided p), Holm-corrected over the methods
  compared in one table. A difference is marked significant when its corrected p is below 0.05.

Groups whose predictions are not on disk (a W&B baseline, published rows) get no interval.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from harness import stats
from harness.report.aggregate import family_of

ALPHA = 0.05
COMPARABLE = ("model", "task", "train_set", "scoring", "eval_limit", "decoding")


def prediction_file(predictions_dir: Path, run_id: str, scoring: str, primary: str, name: str) -> Path:
    """The file harness.runner wrote: <run>/<set>.jsonl for the run's eval.scoring, <run>/<scoring>/<set>.jsonl
    for a scoring of eval.also."""
    sub = "" if scoring == primary else f"{scoring}/"
    return predictions_dir / run_id / f"{sub}{name}.jsonl"


def item_outcomes(predictions_dir: Path, member: dict, sets: list[str]) -> dict | None:
    """{set: [0/1 per item, in item order]} of one run, or None when a file is missing."""
    primary = (member.get("config") or {}).get("eval.scoring", member["scoring"])
    out = {}
    for name in sets:
        path = prediction_file(predictions_dir, member["run_id"], member["scoring"], primary, name)
        try:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        except OSError:
            return None
        out[name] = [int(bool(r["correct"])) for r in sorted(rows, key=lambda r: r["index"])]
    return out


def average_sets(group: dict) -> list[str]:
    fam = family_of(group["task"])
    sets = sorted(group["acc"])
    if fam and all(s in group["acc"] for s in fam.paper_average):
        return list(fam.paper_average)
    return sets


def group_outcomes(group: dict, members: list[dict], predictions_dir: Path) -> dict | None:
    """{set: per-item correctness averaged over the group's seeds} for every evaluated set, or None
    without predictions."""
    sets = sorted(group["acc"])
    per_run = [item_outcomes(predictions_dir, m, sets) for m in members]
    if not per_run or any(p is None for p in per_run):
        return None
    if len({tuple(len(p[s]) for s in sets) for p in per_run}) != 1:
        return None  # seeds evaluated different items: no item-level pairing
    return {s: np.mean([p[s] for p in per_run], axis=0) for s in sets}


def average_interval(outcomes: dict) -> dict:
    ci = stats.paired_bootstrap([100.0 * np.asarray(v) for v in outcomes.values()])
    return {"mean": ci["mean"], "low": ci["low"], "high": ci["high"], "items": ci["n"]}


def difference(a: dict, b: dict, binary: bool) -> dict:
    """Average of a minus average of b on the same items (points), interval and two-sided p."""
    sets = [s for s in a if s in b and len(a[s]) == len(b[s])]
    diffs = [100.0 * (np.asarray(a[s]) - np.asarray(b[s])) for s in sets]
    ci = stats.paired_bootstrap(diffs)
    if binary:
        flat_a = [bool(x) for s in sets for x in a[s]]
        flat_b = [bool(x) for s in sets for x in b[s]]
        p = stats.mcnemar_exact(flat_a, flat_b)["p"]
        test = "exact McNemar"
    else:
        p = stats.bootstrap_p(diffs)
        test = "paired bootstrap"
    return {"diff": ci["mean"], "low": ci["low"], "high": ci["high"], "p": p, "test": test}


def annotate(groups: list[dict], members_of: dict, predictions_dir: Path, reference: str = "lora") -> None:
    """Add to every group its average's interval ('avg_ci') and, for groups with a reference-method
    group on the same items, the difference from it ('vs_reference', Holm-corrected per table)."""
    outcomes = {}
    for g in groups:
        o = group_outcomes(g, members_of[id(g)], predictions_dir) if g["acc"] else None
        g["set_ci"] = {s: stats.paired_bootstrap([100.0 * np.asarray(v)]) for s, v in o.items()} if o else {}
        o = {s: o[s] for s in average_sets(g)} if o else None  # the average's sets, compared below
        outcomes[id(g)] = o
        g["avg_ci"] = average_interval(o) if o else None
        g["vs_reference"] = None
    tables: dict = {}
    for g in groups:
        tables.setdefault(tuple(g[k] for k in COMPARABLE), []).append(g)
    for members in tables.values():
        refs = [g for g in members if g["method"] == reference and outcomes[id(g)] is not None]
        if len(refs) != 1:
            continue
        ref = refs[0]
        compared = [g for g in members if g is not ref and outcomes[id(g)] is not None]
        results = [difference(outcomes[id(g)], outcomes[id(ref)], binary=g["n"] == 1 and ref["n"] == 1)
                   for g in compared]
        for g, res, p_holm in zip(compared, results, stats.holm([r["p"] for r in results])):
            g["vs_reference"] = {**res, "reference": reference, "p_holm": p_holm, "significant": p_holm < ALPHA}
