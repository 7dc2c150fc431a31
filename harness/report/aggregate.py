"""From records to comparable rows and seed-aggregated groups (pure: no files).

A record becomes a flat row (`flatten`). Rows that would be averaged must have been computed the
same way, so a group is keyed by model, method, task, training set, scoring, eval limit and
decoding, plus a `variant` label naming any other config key that differs between runs of that
key (e.g. `method.lr=0.0001`), so two learning rates are never averaged together. Within a group
the runs differ only by seed: values are the mean and the sample standard deviation (n-1), by a
pandas groupby (`by_group`, which the regression gate uses too).

What a set's score and an average mean depends on the scoring, decided here once: generated and
label-scored answers are scored by accuracy; cloze-scored sets by their standard lm-eval metric
(harness.tasks.cloze_prompts.standard_metric: acc_norm where lm-eval reports it), and a cloze average leaves out
the sets whose prompt lost what lm-eval's uses (harness.tasks.cloze_prompts.NOT_AVERAGED: BoolQ), which are
still shown.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd

from harness import tasks
from harness.config import NON_SEMANTIC_KEYS
from harness.tasks import cloze_prompts
from harness.record import Corrupt, Stored
from harness.report import retention

# eval_precision: the dtype the evaluation ran at (eval.precision resolved); bf16 rounding moves
# scores, so runs evaluated at different precisions are different measurements
KEY = ("model", "method", "task", "train_set", "scoring", "eval_limit", "decoding", "eval_precision")
GROUP_KEY = KEY + ("variant",)
# config keys that are part of KEY already, or that do not change what is measured
_NOT_VARIANT = {"seed", "model.name", "method.name", "task.name", "task.train_set", "eval.scoring", "eval.limit",
                "eval.num_beams", "eval.batch_size", "validation.batch_size", "forgetting.batch_size", "train.log_every",
               "device"}


def all_families() -> list:
    tasks.all_test_sets()  # imports every family module (harness/tasks/*.py), so FAMILIES is complete
    return list(tasks.FAMILIES.values())


def family_of(task: str):
    """The declared task family, or None for a task this checkout does not know."""
    return {f.name: f for f in all_families()}.get(task)


def metric_of(scoring: str, name: str) -> str:
    """What a set's score is under `scoring`: acc, or for cloze its standard lm-eval metric."""
    return cloze_prompts.standard_metric(name) if scoring == "cloze" else "acc"


def not_averaged(scoring: str) -> dict:
    """{set: why} of the sets an average under `scoring` leaves out (shown, not averaged)."""
    return dict(cloze_prompts.NOT_AVERAGED) if scoring == "cloze" else {}


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


def memory_gib(phase) -> tuple[float | None, str | None]:
    """Peak memory of one phase (harness.record.schema.PhaseMemory) and what it measures: CUDA peak
    allocated, else CPU peak RSS."""
    if phase.peak_allocated_gib is not None:
        return float(phase.peak_allocated_gib), "CUDA peak allocated"
    if phase.peak_rss_gib is not None:
        return float(phase.peak_rss_gib), "CPU peak RSS"
    return None, None


def device_identity(meta) -> str | None:
    """What throughput and memory are comparable across: the GPU's name, or for CPU runs the CPU
    model and thread count (every CPU record says just 'cpu'; records before cpu_model give the
    architecture only, and so never compare with newer ones)."""
    cpu, threads = meta.cpu_model or meta.cpu, meta.cpu_count
    if meta.device_name == "cpu" and (cpu or threads):
        return f"cpu ({cpu or '?'}, {threads or '?'} threads)"
    return meta.device_name


def flatten(rec, path: Path | None = None, evaluation: dict | None = None, eval_info=None) -> dict:
    """One record (harness.record.schema.Record) as a flat row with what tables, plots and the
    regression gate read; `evaluation`/`eval_info`: another scoring of it (eval.also) instead of
    its primary one."""
    info = rec.run_info
    ev = rec.eval if evaluation is None else evaluation
    eval_info = rec.eval_info if eval_info is None else eval_info
    first = next(iter(ev.values()), None)
    acc = {k: float(v.accuracy) for k, v in ev.items()}
    items = {k: int(v.n) for k, v in ev.items() if v.n}
    acc_norm = {k: float(v.accuracy_norm) for k, v in ev.items() if v.accuracy_norm is not None}
    overlap = {k for k, v in ev.items() if v.overlaps_training_data}
    approx = {k for k, v in ev.items() if v.approximate}
    family = family_of(info.task)
    mem_train, kind_train = memory_gib(rec.phase_memory("train"))
    mem_eval, kind_eval = memory_gib(rec.phase_memory("eval"))
    scored_by = (first.scoring if first else None) or info.setting("eval.scoring")
    scoring = {"loglik": "label"}.get(scored_by, scored_by) or "generate"  # 'loglik': older records' name
    score = scores_of(scoring, acc, acc_norm)
    decoding = (first.model_extra or {}).get("decoding") if first else None
    if not decoding and scoring == "generate":
        beams = info.setting("eval.num_beams")
        decoding = None if beams is None else ("greedy" if beams == 1 else f"beam{beams}")
    params = rec.params
    return {
        "run_id": rec.run_id, "status": rec.status, "error": rec.error,
        "path": str(path) if path else None,
        "model": info.model, "method": info.method, "task": info.task, "train_set": info.train_set,
        "seed": info.seed,
        "scoring": scoring,
        "eval_limit": int(info.setting("eval.limit") or 0),
        "decoding": decoding or "-",
        "eval_precision": (first.precision if first else None) or "-",  # '-': records before eval.precision
        "config": dotted(info.config),
        "acc": acc, "acc_norm": acc_norm, "items": items, "overlap": overlap, "approximate": approx,
        "score": score,
        "losses": rec.train_info.losses if rec.train_info else None,
        **tasks.averages(averaged_family(family, scoring), {s: v for s, v in score.items() if v is not None},
                         overlap),
        "parse_failure_rate": _mean([v.parse_failure_rate for v in ev.values()]),
        # the evaluation pass's questions/s (records before it had per-set figures: their mean)
        "eval_qps": eval_info.questions_per_second
        or _mean([(v.model_extra or {}).get("questions_per_second") for v in ev.values()]),
        "trainable": params.trainable if params else None, "total_params": params.total if params else None,
        "trainable_pct": params.trainable_pct if params else None,
        "mem_train_gib": mem_train, "mem_eval_gib": mem_eval, "mem_kind": kind_train or kind_eval,
        "tokens_per_second": rec.throughput.tokens_per_second, "host_gflops": rec.throughput.host_gflops,
        "forgetting_avg": rec.forgetting.forgetting_avg if rec.forgetting else None,
        "forgetting": rec.forgetting,  # per-item differences: pooled over seeds by report.retention
        "device": device_identity(rec.meta_info), "device_name": rec.meta_info.device_name,
        "device_type": rec.meta_info.device_type,
    }


def flatten_all(records: list[Stored]) -> tuple[list[dict], list[Corrupt]]:
    """Rows of the records that can be read (one per scoring: a record evaluated with eval.also has
    a row for each), and the records whose content is not what a record holds: those are reported
    like corrupt files, not crashed on."""
    rows, bad = [], []
    for path, rec in records:
        try:
            rows.append(flatten(rec, path))
            for extra in rec.eval_also.values():
                rows.append(flatten(rec, path, extra.eval, extra.eval_info))
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            bad.append(Corrupt(str(path or rec.run_id), f"unexpected content ({type(exc).__name__}: {exc})"))
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
