"""The comparison itself (pure): baseline rows vs current rows -> one verdict row per comparison.

Runs are matched by (model, method, task, training set, scoring, eval limit, decoding, evaluation
precision); runs of one match that differ by seed are averaged on each side. Only status-ok runs
are compared.

Tolerances follow what a number can tell:
- accuracy, per test set and pooled over the sets of a match. Both sides answered the same items,
  so the test is paired: per item (and seed, matched by seed value), right in the baseline and
  wrong now ('lost') or the reverse ('gained'); an exact McNemar test (statsmodels) on those
  discordant items. A drop fails when more items were lost than gained, the two-sided p is below
  the level z standard errors stand for (2 * (1 - Phi(z)): 0.27% for z=3, so false alarms stay
  below ~0.3% per comparison when nothing changed) and the drop exceeds --acc-drop points.
  Deterministic CPU runs of unchanged code reproduce their items exactly: nothing discordant,
  p = 1. Items that flip both ways (a GPU's nondeterminism) cancel; a few items all lost do not:
  10 of 100 items lost and none gained fails (p = 0.002), where comparing the two accuracies as
  independent proportions needs a 21-point drop on 100 items. Seeds are pooled as (seed, item)
  pairs: under "nothing changed" every discordant pair is a coin flip whichever seed it is on.
  Without per-item predictions on both sides (a W&B baseline, records copied without them, seeds
  that do not match) the unpaired test stands in, and the row says so: a drop fails beyond z
  standard errors of the difference of two binomial proportions,
  SE = sqrt(p_b (1 - p_b) / n_b + p_c (1 - p_c) / n_c), n the items evaluated.
- training loss, step by step, per seed: fails when any step differs by more than --loss-rtol
  (relative) on the same kind of device; the same code reproduces it to ~1e-6 on a CPU, while a
  change to the objective, data order, optimizer or schedule moves it far more.
- peak training memory (relative growth) and training tokens/s (relative drop): only between runs
  on the same device; otherwise reported as not comparable, never failing. Tokens/s are compared per
  unit of the host's speed measured around each run's training (a fixed matrix product), raw where a
  side lacks it.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from scipy.stats import norm

from harness.analysis import stats
from harness.report.aggregate import KEY, by_group, family_of
from harness.report.significance import item_outcomes

EPS = 1e-9  # a change exactly at the tolerance passes


def summarise(rows: list[dict]) -> dict[tuple, dict]:
    """Per match key: seed-averaged accuracy and items per set, losses per seed, memory, throughput,
    devices, and the runs that did not finish ok."""
    out: dict[tuple, dict] = {}
    ok = [r for r in rows if r["status"] == "ok"]
    for members, values in by_group(ok, KEY, ("mem_train_gib", "tokens_per_second", "host_gflops")):
        out[tuple(members[0][k] for k in KEY)] = {
            "ok": members, "not_ok": [], "n": len(members),
            "acc": {s: mean for s, (mean, _) in values["acc"].items()},
            "items": {s: min(m["items"].get(s, 0) for m in members) for s in values["acc"]},
            "losses": {m["seed"]: m["losses"] for m in members if m.get("losses")},
            "mem": values["mem_train_gib"][0], "tps": values["tokens_per_second"][0],
            # every run's host speed, or none: a mean over some runs would not describe the others
            "host": values["host_gflops"][0] if all(m.get("host_gflops") for m in members) else None,
            "mem_kind": {r["mem_kind"] for r in members if r["mem_train_gib"] is not None},
            "devices": {r["device"] for r in members}, "device_types": {r.get("device_type") for r in members}}
    for r in rows:
        if r["status"] != "ok":  # listed, never averaged: a key with none ok has nothing to compare
            side = out.setdefault(tuple(r[k] for k in KEY), {"ok": [], "not_ok": [], "n": 0, "acc": {}, "items": {},
                                                             "losses": {}, "mem": None, "tps": None, "host": None,
                                                             "mem_kind": set(),
                                                             "devices": set(), "device_types": set()})
            side["not_ok"].append(r)
    return out


def _set_order(task: str, sets) -> list[str]:
    fam = family_of(task)
    known = list(fam.test_sets) if fam else []
    return [s for s in known if s in sets] + sorted(s for s in sets if s not in known)


def predictions_dir(row: dict) -> Path | None:
    """Where a record's per-item predictions are: <results>/predictions beside <results>/runs (as
    harness.pipeline.runner writes them and baselines keep them)."""
    return Path(row["path"]).parent.parent / "predictions" if row.get("path") else None


def _outcomes(member: dict, sets: list[str]) -> dict | None:
    where = predictions_dir(member)
    return None if where is None else item_outcomes(where, member, sets, standard=False)


def paired_items(base: list[dict], cur: list[dict], sets: list[str]) -> dict | None:
    """{set: (baseline 0/1 per item, current 0/1 per item)}, seeds matched by value and concatenated;
    None unless both sides ran the same seeds and every run's predictions cover the same items."""
    b_seeds, c_seeds = {str(m["seed"]): m for m in base}, {str(m["seed"]): m for m in cur}
    if set(b_seeds) != set(c_seeds) or len(b_seeds) != len(base) or len(c_seeds) != len(cur):
        return None
    out = {s: ([], []) for s in sets}
    for seed, b_run in b_seeds.items():
        b_items, c_items = _outcomes(b_run, sets), _outcomes(c_seeds[seed], sets)
        if b_items is None or c_items is None or any(len(b_items[s]) != len(c_items[s]) for s in sets):
            return None
        for s in sets:
            out[s][0].extend(b_items[s])
            out[s][1].extend(c_items[s])
    return out


def accuracy_threshold(p_b: float, n_b: int, p_c: float, n_c: int, z: float, floor: float) -> float:
    """The unpaired test's drop (points) beyond which an accuracy change is more than sampling noise."""
    if not n_b or not n_c:  # item counts unknown (an old W&B summary): the floor alone
        return floor
    p_b, p_c = p_b / 100, p_c / 100
    se = math.sqrt(p_b * (1 - p_b) / n_b + p_c * (1 - p_c) / n_c)
    return max(floor, 100 * z * se)


def compare(baseline: list[dict], current: list[dict], z: float = 3.0, acc_drop: float = 0.0,
            loss_rtol: float = 1e-3, vram_growth: float = 0.10, tps_drop: float = 0.20) -> list[dict]:
    """Every comparison as a row: key fields, metric, baseline, current, change, limit, result, note.
    result: PASS | FAIL | SKIP (not comparable) | MISSING (in baseline, not in current) | NEW."""
    base, cur = summarise(baseline), summarise(current)
    out = []

    def row(key, metric, b=None, c=None, change="", limit="", result="PASS", note=""):
        out.append({**dict(zip(KEY, key)), "metric": metric, "baseline": b, "current": c, "change": change,
                    "limit": limit, "result": result, "note": note})

    for key in sorted(base, key=str):
        b = base[key]
        if not b["n"]:
            continue  # nothing ok in the baseline: nothing to hold current to
        c = cur.get(key)
        if c is None or not c["n"]:
            why = f"current runs not ok: {sorted({r['status'] for r in c['not_ok']})}" if c else "no current run"
            row(key, "run", result="MISSING", note=why)
            continue
        order = _set_order(key[2], b["acc"])
        common = [s for s in order if s in c["acc"]]
        for s in order:
            if s not in c["acc"]:
                row(key, f"acc {s}", b["acc"][s], result="MISSING", note="set not evaluated in current")
        pairs = paired_items(b["ok"], c["ok"], common)
        for s in common:
            _acc_row(row, key, f"acc {s}", (b["acc"][s], b["items"].get(s, 0)), (c["acc"][s], c["items"].get(s, 0)),
                     z, acc_drop, pairs[s] if pairs else None, note=f"{c['items'].get(s) or '?'} items")
        if len(common) > 1:
            pooled = tuple([x for s in common for x in pairs[s][side]] for side in (0, 1)) if pairs else None
            _acc_row(row, key, "acc pooled", _pooled(b, common), _pooled(c, common), z, acc_drop, pooled,
                     note=f"{len(common)} sets, items-weighted")
        _loss_row(row, key, b, c, loss_rtol)
        _cost_rows(row, key, b, c, vram_growth, tps_drop)
    for key in sorted(set(cur) - set(base), key=str):
        if cur[key]["n"]:
            row(key, "run", result="NEW", note="not in baseline")
    return out


def _pooled(side: dict, sets: list[str]) -> tuple[float, int]:
    """Items-weighted accuracy over `sets` and the items behind it (the plain mean when counts are unknown)."""
    items = [side["items"].get(s, 0) for s in sets]
    if not all(items):
        return sum(side["acc"][s] for s in sets) / len(sets), 0
    return sum(side["acc"][s] * n for s, n in zip(sets, items)) / sum(items), sum(items)


def _acc_row(row, key, metric, b, c, z, floor, pair=None, note=""):
    """One accuracy comparison: paired on items when `pair` holds both sides' per-item outcomes."""
    (p_b, n_b), (p_c, n_c) = b, c
    change = p_c - p_b
    if pair is None:
        limit = accuracy_threshold(p_b, n_b, p_c, n_c, z, floor)
        row(key, metric, round(p_b, 4), round(p_c, 4), f"{change:+.2f} pts", f"-{limit:.2f} pts",
            "FAIL" if -change > limit + EPS else "PASS", f"{note}; unpaired (no per-item predictions on both sides)")
        return
    test = stats.mcnemar_exact(pair[0], pair[1])  # only_a: right in the baseline only (lost)
    alpha = 2 * float(norm.sf(z))
    fails = test["only_a"] > test["only_b"] and test["p"] < alpha and -change > floor + EPS
    limit = f"p < {alpha:.2g}" + (f", -{floor:g} pts" if floor else "")
    row(key, metric, round(p_b, 4), round(p_c, 4), f"{change:+.2f} pts", limit, "FAIL" if fails else "PASS",
        f"{note}; paired: {test['only_a']} lost, {test['only_b']} gained, exact McNemar p={test['p']:.2g}")


def _loss_row(row, key, b, c, loss_rtol):
    seeds = sorted(set(b["losses"]) & set(c["losses"]), key=str)
    if not seeds:
        if b["losses"]:
            row(key, "train loss", result="SKIP", note="no losses on one side")
        return
    if b["device_types"] != c["device_types"]:
        row(key, "train loss", result="SKIP", note="not comparable: different kind of device")
        return
    worst, where = 0.0, ""
    for seed in seeds:
        lb, lc = b["losses"][seed], c["losses"][seed]
        if len(lb) != len(lc):
            row(key, "train loss", len(lb), len(lc), result="FAIL", note=f"seed {seed}: a different number of steps")
            return
        for step, (x, y) in enumerate(zip(lb, lc), 1):
            rel = abs(y - x) / max(abs(x), 1e-12)
            if rel > worst:
                worst, where = rel, f"seed {seed}, step {step}"
    last = b["losses"][seeds[0]][-1], c["losses"][seeds[0]][-1]
    row(key, "train loss", round(last[0], 5), round(last[1], 5), f"max {worst:.1e} rel", f"{loss_rtol:g} rel",
        "FAIL" if worst > loss_rtol + EPS else "PASS",
        f"worst at {where}" if worst else f"{len(seeds)} seed(s), every step equal")


def _cost_rows(row, key, b, c, vram_growth, tps_drop):
    same_device = len(b["devices"]) == 1 and b["devices"] == c["devices"] and None not in b["devices"]
    why = (f"not comparable: different device ({', '.join(sorted(map(str, b['devices'])))} vs "
           f"{', '.join(sorted(map(str, c['devices'])))})")
    if b["mem"] is not None or c["mem"] is not None:
        if b["mem"] is None or c["mem"] is None:
            row(key, "peak train mem (GiB)", b["mem"], c["mem"], result="SKIP", note="missing on one side")
        elif not same_device or b["mem_kind"] != c["mem_kind"]:
            row(key, "peak train mem (GiB)", b["mem"], c["mem"], result="SKIP",
                note=why if not same_device else "not comparable: different memory measure")
        else:
            growth = c["mem"] / b["mem"] - 1 if b["mem"] else 0.0
            row(key, "peak train mem (GiB)", round(b["mem"], 4), round(c["mem"], 4), f"{growth:+.1%}",
                f"+{vram_growth:.0%}", "FAIL" if growth > vram_growth + EPS else "PASS", "/".join(b["mem_kind"]))
    if b["tps"] is not None or c["tps"] is not None:
        if b["tps"] is None or c["tps"] is None:
            row(key, "train tokens/s", b["tps"], c["tps"], result="SKIP", note="missing on one side")
        elif not same_device:
            row(key, "train tokens/s", b["tps"], c["tps"], result="SKIP", note=why)
        else:
            change, note = throughput_change(b, c)
            row(key, "train tokens/s", round(b["tps"], 2), round(c["tps"], 2), f"{change:+.1%}", f"-{tps_drop:.0%}",
                "FAIL" if -change > tps_drop + EPS else "PASS", note)


def throughput_change(b: dict, c: dict) -> tuple[float, str]:
    """The relative change of tokens/s, per unit of the host's measured speed when both sides have it
    (harness.pipeline.measure.host_gflops): the same code on the same CPU model runs 20-30% slower on a
    busy or throttled day, which the raw figures would blame on the code."""
    raw = c["tps"] / b["tps"] - 1 if b["tps"] else 0.0
    if not (b.get("host") and c.get("host")):
        return raw, "raw: host speed not recorded on both sides"
    change = (c["tps"] / c["host"]) / (b["tps"] / b["host"]) - 1 if b["tps"] else 0.0
    return change, f"per host GFLOP/s ({b['host']:.0f} then {c['host']:.0f}); raw {raw:+.1%}"


def verdict(rows: list[dict], require_all: bool = False) -> int:
    failed = any(r["result"] == "FAIL" for r in rows) or (require_all and any(r["result"] == "MISSING" for r in rows))
    return 1 if failed else 0


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no comparisons_"
    df = pd.DataFrame(rows).rename(columns={"train_set": "train set", "eval_limit": "items/set",
                                         "eval_precision": "eval precision"})
    df["items/set"] = df["items/set"].map(lambda n: f"first {n}" if n else "all")
    for col in ("baseline", "current"):  # two decimals to read; the comparison used full precision
        # pandas holds a missing value (a NEW or MISSING row) as NaN in a numeric column: show it as missing
        df[col] = df[col].map(lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v))
                              else f"{v:.2f}" if isinstance(v, float) else v)
    df = df.fillna("–").astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    return df.to_markdown(index=False, disable_numparse=True)
