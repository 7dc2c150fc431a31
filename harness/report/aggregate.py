"""From records to comparable rows and seed-aggregated groups (pure: no files).

A record becomes a flat row (`flatten`). Rows that would be averaged must have been computed the
same way, so a group is keyed by model, method, task, training set, scoring, eval limit and
decoding, plus a `variant` label naming any other config key that differs between runs of that
key (e.g. `method.lr=0.0001`), so two learning rates are never averaged together. Within a group
the runs differ only by seed: values are the mean and the sample standard deviation (n-1), by a
pandas groupby (`by_group`, which the regression gate uses too).

What a set's score and an average mean depends on the scoring, decided here once: generated and
label-scored answers are scored by accuracy; cloze-scored sets by their standard lm-eval metric
(harness.cloze.standard_metric: acc_norm where lm-eval reports it), and a cloze average leaves out
the sets whose prompt lost what lm-eval's uses (harness.cloze.NOT_AVERAGED: BoolQ), which are
still shown.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd

from harness import cloze, tasks
from harness.config import NON_SEMANTIC_KEYS
from harness.record import Corrupt, Stored
from harness.report import retention

KEY = ("model", "method", "task", "train_set", "scoring", "eval_limit", "decoding")
GROUP_KEY = KEY + ("variant",)
# config keys that are part of KEY already, or that do not change what is measured
_NOT_VARIANT = {"seed", "model.name", "method.name", "task.name", "task.train_set", "eval.scoring", "eval.limit",
                "eval.num_beams", "eval.batch_size", "forgetting.batch_size", "train.log_every", "device"}


def all_families() -> list:
    tasks.all_test_sets()  # imports every family module (harness/tasks/*.py), so FAMILIES is complete
    return list(tasks.FAMILIES.values())


def family_of(task: str):
    """The declared task family, or None for a task this checkout does not know."""
    return {f.name: f for f in all_families()}.get(task)


def metric_of(scoring: str, name: str) -> str:
    """What a set's score is under `scoring`: acc, or for cloze its standard lm-eval metric."""
    return cloze.standard_metric(name) if scoring == "cloze" else "acc"


def not_averaged(scoring: str) -> dict:
    """{set: why} of the sets an average under `scoring` leaves out (shown, not averaged)."""
    return dict(cloze.NOT_AVERAGED) if scoring == "cloze" else {}


def averaged_family(family, scoring: str):
    """The family as its averages see it under `scoring`: without the sets `not_averaged` names."""
    drop = not_averaged(scoring)
    if family is None or not drop:
        return family
    return dataclasses.replace(family, paper_average=tuple(s for s in family.paper_average if s not in drop),
                               test_sets={k: v for k, v in family.test_sets.items() if k not in drop})


def scores_of(scoring: str, acc: dict, acc_norm: dict) -> dict:
    """Each set's score under `scoring` (metric_of), from a record's acc and acc_norm."""
    return {s: acc_norm.get(s) if metric_of(scoring, s) == "acc_norm" else v for s, v in acc.items()}


def _mean(values: list[float]) -> float | None:
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def memory_gib(phase: dict | None) -> tuple[float | None, str | None]:
    """Peak memory of one phase and what it measures: CUDA peak allocated, else CPU peak RSS."""
    phase = phase or {}
    if phase.get("peak_allocated_gib") is not None:
        return float(phase["peak_allocated_gib"]), "CUDA peak allocated"
    if phase.get("peak_rss_gib") is not None:
        return float(phase["peak_rss_gib"]), "CPU peak RSS"
    return None, None


def device_identity(meta: dict) -> str | None:
    """What throughput and memory are comparable across: the GPU's name, or for CPU runs the CPU
    model and thread count (every CPU record says just 'cpu'; records before cpu_model give the
    architecture only, and so never compare with newer ones)."""
    name = meta.get("device_name")
    cpu = meta.get("cpu_model") or meta.get("cpu")
    if name == "cpu" and (cpu or meta.get("cpu_count")):
        return f"cpu ({cpu or '?'}, {meta.get('cpu_count') or '?'} threads)"
    return name


def flatten(rec: dict, path: Path | None = None) -> dict:
    """One record as a flat row with what tables, plots and the regression gate read."""
    info = rec.get("run_info") or {}
    cfg = info.get("config") or {}
    ev = rec.get("eval") or {}
    first = next(iter(ev.values()), {}) if ev else {}
    ecfg = cfg.get("eval") or {}
    acc = {k: float(v["accuracy"]) for k, v in ev.items() if isinstance(v, dict) and v.get("accuracy") is not None}
    items = {k: int(v["n"]) for k, v in ev.items() if isinstance(v, dict) and v.get("n")}
    acc_norm = {k: float(v["accuracy_norm"]) for k, v in ev.items()
                if isinstance(v, dict) and v.get("accuracy_norm") is not None}
    overlap = {k for k, v in ev.items() if isinstance(v, dict) and v.get("overlaps_training_data")}
    approx = {k for k, v in ev.items() if isinstance(v, dict) and v.get("approximate")}
    family = family_of(info.get("task") or (cfg.get("task") or {}).get("name"))
    mem = rec.get("memory") or {}
    mem_train, kind_train = memory_gib(mem.get("train"))
    mem_eval, kind_eval = memory_gib(mem.get("eval"))
    throughput = ((rec.get("train_info") or {}).get("throughput") or {})
    params = rec.get("params") or {}
    meta = rec.get("meta_info") or {}
    decoding = first.get("decoding") if ev else None
    scoring = {"loglik": "label"}.get(first.get("scoring") or ecfg.get("scoring"),  # older records' name
                                      first.get("scoring") or ecfg.get("scoring")) or "generate"
    score = scores_of(scoring, acc, acc_norm)
    if not decoding and scoring == "generate":
        beams = ecfg.get("num_beams")
        decoding = None if beams is None else ("greedy" if beams == 1 else f"beam{beams}")
    return {
        "run_id": rec.get("run_id"), "status": rec.get("status"), "error": rec.get("error"),
        "path": str(path) if path else None,
        "model": info.get("model") or (cfg.get("model") or {}).get("name"),
        "method": info.get("method") or (cfg.get("method") or {}).get("name"),
        "task": info.get("task") or (cfg.get("task") or {}).get("name"),
        "train_set": info.get("train_set") or (cfg.get("task") or {}).get("train_set"),
        "seed": info.get("seed", cfg.get("seed")),
        "scoring": scoring,
        "eval_limit": int(ecfg.get("limit") or 0),
        "decoding": decoding or "-",
        "config": dotted(cfg),
        "acc": acc, "acc_norm": acc_norm, "items": items, "overlap": overlap, "approximate": approx,
        "score": score,
        "losses": (rec.get("train_info") or {}).get("losses"),
        **tasks.averages(averaged_family(family, scoring), {s: v for s, v in score.items() if v is not None},
                         overlap),
        "parse_failure_rate": _mean([v.get("parse_failure_rate") for v in ev.values() if isinstance(v, dict)]),
        # the evaluation pass's questions/s (records before it had per-set figures: their mean)
        "eval_qps": (rec.get("eval_info") or {}).get("questions_per_second")
        or _mean([v.get("questions_per_second") for v in ev.values() if isinstance(v, dict)]),
        "trainable": params.get("trainable"), "total_params": params.get("total"),
        "trainable_pct": params.get("trainable_pct"),
        "mem_train_gib": mem_train, "mem_eval_gib": mem_eval, "mem_kind": kind_train or kind_eval,
        "tokens_per_second": throughput.get("tokens_per_second"),
        "forgetting_avg": (rec.get("forgetting") or {}).get("forgetting_avg"),
        "forgetting": rec.get("forgetting"),  # per-item differences: pooled over seeds by report.retention
        "device": device_identity(meta), "device_name": meta.get("device_name"),
        "device_type": meta.get("device_type"),
    }


def flatten_all(records: list[Stored]) -> tuple[list[dict], list[Corrupt]]:
    """Rows of the records that can be read (one per scoring: a record evaluated with eval.also has
    a row for each), and the records (valid JSON with a status) whose content is not what a record
    holds: those are reported like corrupt files, not crashed on."""
    rows, bad = [], []
    for path, rec in records:
        try:
            rows.append(flatten(rec, path))
            for extra in (rec.get("eval_also") or {}).values():
                rows.append(flatten({**rec, "eval": extra["eval"], "eval_info": extra.get("eval_info")}, path))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            where = str(path or rec.get("run_id"))
            bad.append(Corrupt(where, f"unexpected content ({type(exc).__name__}: {exc})"))
    return rows, bad


def dotted(cfg: dict, prefix: str = "") -> dict:
    """{'method': {'lr': 1e-4}} -> {'method.lr': '0.0001'} (values as JSON, comparable), without
    the keys that never change what a run computes (results_dir, wandb, ...)."""
    out = {}
    for k, v in cfg.items():
        if not prefix and k in NON_SEMANTIC_KEYS:
            continue
        if isinstance(v, dict):
            out.update(dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, str) else json.dumps(v, sort_keys=True)
    return out


def assign_variants(rows: list[dict]) -> list[dict]:
    """Set row['variant'] to the config keys that tell it apart from the other runs with the same
    KEY ('' when they differ only by seed). Keys some runs lack are ignored: an older record
    without a newly added option is not a different experiment."""
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault(tuple(r[k] for k in KEY), []).append(r)
    for members in by_key.values():
        common = set.intersection(*(set(m["config"]) for m in members)) - _NOT_VARIANT
        differing = sorted(k for k in common if len({m["config"][k] for m in members}) > 1)
        for m in members:
            m["variant"] = ", ".join(f"{k}={m['config'][k]}" for k in differing)
    return rows


# what a group holds as (mean, std) over its seeds, besides the accuracy of each test set
FIELDS = ("avg_paper", "avg_all", "avg_excluding_overlap", "parse_failure_rate", "eval_qps", "trainable",
          "total_params", "trainable_pct", "mem_train_gib", "mem_eval_gib", "tokens_per_second", "forgetting_avg")


def _value(v) -> float | None:
    # pandas' NaN (no value, or the std of one seed) is shown as missing, never as a number
    return None if pd.isna(v) else float(v)


# per-set values a group holds as {set: (mean, std)}: accuracy, cloze scoring's acc_norm, the score
PER_SET = ("acc", "acc_norm", "score")


def by_group(rows: list[dict], keys: tuple, fields: tuple = FIELDS) -> list[tuple[list[dict], dict]]:
    """Rows grouped by the fields `keys` (groups and their members in input order), each group with
    {field: (mean, std)} for `fields` and {'acc': {set: (mean, std)}} (and 'acc_norm') for the sets
    any member evaluated. Missing values are skipped; std is the sample one (ddof=1), None for one value."""
    if not rows:
        return []
    sets = sorted({s for r in rows for s in r["acc"]})
    per_set = [f"{kind}:{s}" for kind in PER_SET for s in sets]
    values = pd.DataFrame([[r[f] for f in fields] + [(r.get(kind) or {}).get(s) for kind in PER_SET for s in sets]
                           for r in rows], columns=[*fields, *per_set], dtype=float)
    # dropna=False: a None in a key (an old record without a training set) is a key like any other
    ids = pd.DataFrame([[r[k] for k in keys] for r in rows], columns=list(keys)).groupby(
        list(keys), dropna=False, sort=False).ngroup()
    stats = values.groupby(ids).agg(["mean", "std"])
    out = []
    for gid, index in ids.groupby(ids, sort=False).groups.items():
        st = stats.loc[gid]
        pair = {c: (_value(st[(c, "mean")]), _value(st[(c, "std")])) for c in values.columns}
        group = {f: pair[f] for f in fields}
        for kind in PER_SET:
            group[kind] = {s: pair[f"{kind}:{s}"] for s in sets if pair[f"{kind}:{s}"][0] is not None}
        out.append(([rows[i] for i in index], group))
    return out


def aggregate(rows: list[dict], extra_key: tuple = ()) -> list[dict]:
    """Groups of ok rows that differ only by seed: per set and per average, mean and std.
    `extra_key` adds fields to the group key (the efficiency table adds 'device')."""
    rows = assign_variants([r for r in rows if r["status"] == "ok"])
    rows.sort(key=lambda m: (str(m["seed"]), str(m["run_id"])))  # members listed by seed
    out = []
    for members, stats in by_group(rows, GROUP_KEY + extra_key):
        g = {k: members[0][k] for k in GROUP_KEY + extra_key}
        g["n"] = len(members)
        g["seeds"] = [m["seed"] for m in members]
        g["run_ids"] = [m["run_id"] for m in members]
        g["acc"], g["acc_norm"], g["score"] = stats["acc"], stats["acc_norm"], stats["score"]
        g["overlap"] = set().union(*(m["overlap"] for m in members))
        g["approximate"] = set().union(*(m["approximate"] for m in members))
        g.update({f: stats[f] for f in FIELDS})
        # seeds pooled item by item, not their intervals averaged
        g["forgetting_ci"] = retention.across_seeds([m["forgetting"] for m in members], g["seeds"])
        g["mem_kind"] = " / ".join(sorted({m["mem_kind"] for m in members if m["mem_kind"]})) or None
        lrs = {m["config"].get("method.lr") for m in members} - {None}
        g["lr"] = float(next(iter(lrs))) if len(lrs) == 1 else None  # one learning rate per group (variants split)
        g["devices"] = sorted({m["device_name"] or "?" for m in members})
        out.append(g)
    return sorted(out, key=group_order)


def method_rank(method: str) -> tuple:
    """Display order: the registry's (the base model, full fine-tuning, then each family of PEFT
    methods); a method this checkout does not know comes last."""
    from harness import methods
    order = list(methods.all_methods())
    return (order.index(method), "") if method in order else (len(order), str(method))


def group_order(g: dict) -> tuple:
    return (str(g["task"]), str(g["model"]), method_rank(g["method"]), str(g["train_set"]), str(g["scoring"]),
            g["eval_limit"], str(g["decoding"]), str(g.get("variant", "")))
