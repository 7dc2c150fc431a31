"""Forgetting (Biderman et al. 2024, "LoRA Learns Less and Forgets Less"): accuracy on a retention
suite before and after fine-tuning, scored by log-likelihood on the first N items of each set.

The before-scores depend only on the base model (and its quantisation), so they are cached per
model and suite: a sweep computes them once.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from harness import atomic, evaluate, tasks, validate

log = logging.getLogger("harness.forgetting")


def suite(fcfg) -> list[tasks.TestSet]:
    return validate.check_retention_suite(fcfg)


def score(model, tok, fcfg, style: str, device, cache_dir: str) -> dict:
    out = {}
    for ts in suite(fcfg):
        # the shipped files: the suite must not change with network access (HellaSwag is approximate)
        records, _ = tasks.load_test_set(ts, cache_dir, "approx")
        metrics, _ = evaluate.evaluate_set(model, tok, ts, tasks.select(records, fcfg.limit), "loglik", 1,
                                           fcfg.batch_size, 1, style, device)
        out[ts.name] = metrics["accuracy"]
    return out


def cache_path(cache_dir: str, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / "retention" / f"{key['model']}-{digest}.json"


def base_scores(model, tok, fcfg, style, device, cache_dir, key: dict) -> tuple[dict, bool]:
    """Before-scores, from the cache when this base model and suite were scored already."""
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
    per_set = {k: round(before[k] - after[k], 4) for k in before}
    return {"before": before, "after": after, "forgetting": per_set,
            "forgetting_avg": round(sum(per_set.values()) / len(per_set), 4) if per_set else None,
            "unit": "accuracy points (before - after)"}
