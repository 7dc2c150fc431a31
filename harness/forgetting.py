"""Forgetting as Biderman et al. (2024, "LoRA Learns Less and Forgets Less") measure it: zero-shot
cloze accuracy on HellaSwag (acc_norm), ARC-Challenge (acc_norm) and WinoGrande (acc), the
lm-evaluation-harness way (harness.cloze), before and after fine-tuning, on the same items.

Forgetting per set is the mean per-item paired difference before - after (points), with a 95%
bootstrap interval over items; the average is over the sets (intervals resample items within each
set). Label-word scoring is not used here: on a model not trained on the LLM-Adapters format it
measures a preference among label tokens, and after training on that format it mostly measures
that the format was learned, not what was retained.

The before-scores depend only on the base model (and its quantisation), so they are cached per
model and suite, item by item: a sweep computes them once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from harness import atomic, cloze, evaluate, stats, tasks, validate

log = logging.getLogger("harness.forgetting")


def metric(name: str) -> str:
    """The set's standard lm-eval metric: acc_norm where the task reports it, else acc."""
    return cloze.standard_metric(name)


def suite(fcfg) -> list[tasks.TestSet]:
    return validate.check_retention_suite(fcfg)


def score(model, tok, fcfg, style: str, device, cache_dir: str) -> dict:
    """Per set: the metric, per-item correctness (0/1) and the accuracy in points."""
    sets = []
    for ts in suite(fcfg):
        # the shipped files: the suite must not change with network access (HellaSwag is approximate)
        records, _ = tasks.load_test_set(ts, cache_dir, "approx")
        sets.append((ts, tasks.select(records, fcfg.limit)))
    _, predictions, _ = evaluate.evaluate_sets(model, tok, sets, "cloze", 1, fcfg.batch_size, 1, style, device)
    out = {}
    for ts, _ in sets:
        key = "correct_norm" if metric(ts.name) == "acc_norm" else "correct"
        items = [int(row[key]) for row in predictions[ts.name]]
        out[ts.name] = {"metric": metric(ts.name), "items": items,
                        "accuracy": round(100.0 * sum(items) / len(items), 4)}
    return out


def cache_path(cache_dir: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "retention" / f"{key['model']}-{digest}.json"


def base_scores(model, tok, fcfg, style, device, cache_dir, key: dict) -> tuple[dict, bool]:
    """Before-scores, from the cache when this base model and suite were scored already."""
    key = {**key, "scoring": "cloze", "metrics": {n: metric(n) for n in fcfg.test_sets}}
    path = cache_path(cache_dir, key)
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["scores"], True
    except (OSError, ValueError):
        pass
    scores = score(model, tok, fcfg, style, device, cache_dir)
    atomic.write_json(path, {"key": key, "scores": scores})
    return scores, False


def summarise(before: dict, after: dict) -> dict:
    """Per set and on average: before, after, and the forgetting (before - after, points) with a
    95% paired bootstrap interval over the items (harness.stats.bootstrap; one run is one seed).
    Each set keeps its per-item paired differences (`item_diffs`, before - after: -1, 0 or 1), so
    the report can pool seeds item by item (harness.report.retention), not average their intervals."""
    per_set, diffs = {}, {}
    for name in before:
        diffs[name] = [int(b) - int(a) for b, a in zip(before[name]["items"], after[name]["items"])]
        ci = stats.bootstrap([stats.Scores.of((0,), [[100.0 * d for d in diffs[name]]])])
        per_set[name] = {"metric": before[name]["metric"], "before": before[name]["accuracy"],
                         "after": after[name]["accuracy"], "forgetting": ci["mean"], "ci95": [ci["low"], ci["high"]],
                         "items": len(diffs[name]), "item_diffs": diffs[name]}
    avg = stats.bootstrap([stats.Scores.of((0,), [[100.0 * d for d in v] for v in diffs.values()])])
    return {"sets": per_set, "forgetting_avg": avg["mean"], "forgetting_avg_ci95": [avg["low"], avg["high"]],
            "scoring": "cloze (lm-eval style, zero-shot)",
            "items_per_set": min((len(d) for d in diffs.values()), default=0),
            "unit": "accuracy points, before - after (positive: forgotten); interval: paired bootstrap over items"}
