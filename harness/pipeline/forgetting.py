"""Forgetting, measured out of the run's domain, before and after fine-tuning, on the same items.

The suite depends on the run's task family (harness.tasks, `retention`; forgetting.test_sets=[]):

- arithmetic runs: as Biderman et al. (2024, "LoRA Learns Less and Forgets Less") measure it for
  models trained on code and math: zero-shot cloze accuracy on HellaSwag (acc_norm), ARC-Challenge
  (acc_norm) and WinoGrande (acc), the lm-evaluation-harness way (harness.pipeline.cloze). Forgetting per set
  is the mean per-item paired difference before - after (points), with a 95% bootstrap interval
  over items; the average is over the sets. Label-word scoring is not used here: on a model not
  trained on the LLM-Adapters format it measures a preference among label tokens, and after
  training on that format it mostly measures that the format was learned, not what was retained.
- commonsense runs: those three sets are commonsense test sets, the run's own task (and ARC-c's
  training split is in its training data), so "forgetting" there would be in-domain improvement
  with the sign flipped. Instead: the cross-entropy of held-out math text, GSM8K's human-written
  training solutions ("Question: ...\nAnswer:" then the solution, whose tokens are scored), which
  no commonsense training set or test set holds. Per document: the mean loss of its solution
  tokens (nats/token). Forgetting = after - before (positive: forgotten, the model predicts the
  reference solutions worse), per set the mean over documents with a 95% t interval over them.

harness.config.checks refuses a suite set of the run's own family or in its training data. Every item
is scored in forwards of its own at the evaluation precision (harness.pipeline.evaluate), so an item's
"after" equals its score in the evaluation pass whenever both score it.

The before-scores depend only on the base model (and its quantisation) and the precision, so they
are cached per model and suite, item by item: a sweep computes them once.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from harness import tasks
from harness.analysis import stats
from harness.config import checks
from harness.pipeline import cloze, evaluate
from harness.tasks import cloze_prompts
from harness.record import atomic
from harness.record.digest import json_digest

log = logging.getLogger("harness.pipeline.forgetting")


def metric(name: str) -> str:
    """The set's standard lm-eval metric: acc_norm where the task reports it, else acc."""
    return cloze_prompts.standard_metric(name)


LOSS_METRIC = "token cross-entropy"


def suite(fcfg, task: str | None = None) -> list:
    """The retention suite of a run of task family `task` (forgetting.test_sets, or the family's
    out-of-domain default when empty): TestSets (cloze) or HeldOutTexts (cross-entropy)."""
    return checks.check_retention_suite(fcfg, task)


def text_losses(model, tok, text: tasks.HeldOutText, records: list[dict], device) -> list[dict]:
    """Per document: the mean cross-entropy (nats) of its continuation's tokens given its context,
    and their number. Each document is one forward of its own (harness.pipeline.cloze.loglikelihoods with one
    pair per group), so its loss does not depend on the others."""
    pairs = [(text.context.format(**r), text.continuation.format(**r)) for r in records]
    lls = cloze.loglikelihoods(model, tok, pairs, 1, device, groups=[1] * len(pairs))
    out = []
    for (ctx, cont), (ll, _) in zip(pairs, lls):
        n = len(cloze.encode_pair(tok, ctx, cont)[1])
        out.append({"loss": round(-ll / n, 6), "tokens": n})
    return out


def score(model, tok, fcfg, style: str, device, cache_dir: str, task: str | None = None,
          precision=None) -> dict:
    """Per set: cloze sets the metric, per-item correctness (0/1) and the accuracy in points; texts
    (`measure: loss`) per-document mean losses (nats/token, lower is better), their token counts and
    the mean loss. `task`: the run's family (its default suite); `precision`: the evaluation dtype
    (harness.pipeline.evaluate.evaluation_dtype; None: the model as it is)."""
    sets, texts = [], []
    for s in suite(fcfg, task):
        (texts if isinstance(s, tasks.HeldOutText) else sets).append((s, tasks.retention_records(s, fcfg.limit)))
    out = {}
    if texts:
        with evaluate.at_precision(model, precision):
            used = evaluate.precision_name(model)
            for text, records in texts:
                docs = text_losses(model, tok, text, records, device)
                losses = [d["loss"] for d in docs]
                out[text.name] = {"measure": "loss", "metric": LOSS_METRIC, "items": losses,
                                  "tokens": [d["tokens"] for d in docs], "precision": used,
                                  "mean_loss": round(sum(losses) / len(losses), 6)}
    if not sets:
        return out
    metrics, predictions, _ = evaluate.evaluate_sets(model, tok, sets, "cloze", 1, fcfg.batch_size, 1, style,
                                                     device, precision=precision)
    for ts, _ in sets:
        key = "correct_norm" if metric(ts.name) == "acc_norm" else "correct"
        items = [int(row[key]) for row in predictions[ts.name]]
        out[ts.name] = {"metric": metric(ts.name), "items": items, "accuracy": round(100.0 * sum(items) / len(items), 4),
                        "precision": metrics[ts.name]["precision"]}
    return out


def cache_path(cache_dir: str, key: dict) -> Path:
    return Path(cache_dir) / "retention" / f"{key['model']}-{json_digest(key, 16)}.json"


def base_scores(model, tok, fcfg, style, device, cache_dir, key: dict, task: str | None = None,
                precision=None) -> tuple[dict, bool]:
    """Before-scores, from the cache when this base model and suite were scored already (at this
    precision, item by item)."""
    names = [s.name for s in suite(fcfg, task)]
    key = {**key, "scoring": "cloze", "suite": names, "precision": str(precision),
           "metrics": {n: LOSS_METRIC if n in tasks.all_texts() else metric(n) for n in names}}
    path = cache_path(cache_dir, key)
    try:
        cached = json.loads(path.read_text())
        if cached.get("key") == key:
            return cached["scores"], True
    except (OSError, ValueError):
        pass
    scores = score(model, tok, fcfg, style, device, cache_dir, task, precision)
    atomic.write_json(path, {"key": key, "scores": scores})
    return scores, False


def summarise(before: dict, after: dict) -> dict:
    """Per set and on average: before, after, and the forgetting (before - after, points) with a
    95% paired bootstrap interval over the items (harness.analysis.stats.bootstrap; one run is one seed).
    Each set keeps its per-item paired differences (`item_diffs`, before - after: -1, 0 or 1), so
    the report can pool seeds item by item (harness.report.retention), not average their intervals.
    Cross-entropy sets (`measure: loss`, commonsense runs) are summarised apart: `summarise_loss`."""
    if any(s.get("measure") == "loss" for s in before.values()):
        return summarise_loss(before, after)
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


def summarise_loss(before: dict, after: dict) -> dict:
    """Cross-entropy retention (held-out texts; a suite never mixes them with accuracy sets). Per set:
    the mean per-document loss before and after (nats/token), and the forgetting, after - before
    (positive: forgotten), the mean of the per-document paired differences with a 95% t interval
    over the documents (continuous values: no bootstrap needed). The record keeps every document's
    loss before and after (`items_before`, `items_after`) and their differences (`item_loss_diffs`),
    so seeds can be pooled document by document. The average is over the sets, its interval from
    the sets' standard errors (independent documents)."""
    per_set, halves = {}, []
    for name in before:
        b, a = before[name]["items"], after[name]["items"]
        d = [round(y - x, 6) for x, y in zip(b, a)]
        ci = stats.mean_sd_ci(d)
        per_set[name] = {"measure": "loss", "metric": before[name]["metric"],
                         "before": round(sum(b) / len(b), 6), "after": round(sum(a) / len(a), 6),
                         "forgetting": round(ci["mean"], 6),
                         "ci95": [None if ci["low"] is None else round(ci["low"], 6),
                                  None if ci["high"] is None else round(ci["high"], 6)],
                         "items": len(d), "items_before": b, "items_after": a, "item_loss_diffs": d,
                         "tokens": before[name].get("tokens"), "precision": before[name].get("precision")}
        halves.append(None if ci["low"] is None else (ci["high"] - ci["low"]) / 2)
    means = [s["forgetting"] for s in per_set.values()]
    mean = sum(means) / len(means)
    half = None if None in halves else (sum(h * h for h in halves) ** 0.5) / len(halves)
    return {"sets": per_set, "measure": "loss", "forgetting_avg": round(mean, 6),
            "forgetting_avg_ci95": [None, None] if half is None else [round(mean - half, 6), round(mean + half, 6)],
            "scoring": "cross-entropy of held-out reference text (per document: mean over its scored tokens)",
            "items_per_set": min(s["items"] for s in per_set.values()),
            "unit": "nats per token, after - before (positive: forgotten, the text is predicted worse); "
                    "interval: 95% t interval over documents"}
