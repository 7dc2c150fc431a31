"""Regression gate: compare current run records with a baseline; exit 1 when something got worse.

    python -m harness.regress --baseline results/baselines/default [--current results]
                              [--acc-drop 1.0] [--vram-growth 0.10] [--tps-drop 0.20] [--require-all]
    python -m harness.regress --baseline wandb:<entity>/<project>/<group>

Runs are matched by (model, method, task, training set, scoring, eval limit, decoding); runs of
one match that differ by seed are averaged on each side. Only status-ok records are compared.
Per match: the accuracy of every test set and of their average (points; FAIL when it dropped by
more than --acc-drop), peak training memory (FAIL when it grew by more than --vram-growth,
relative) and training tokens/s (FAIL when it fell by more than --tps-drop, relative). Memory
and throughput are compared only between runs on the same device; otherwise they are reported
as not comparable and never fail. Exit status: 0 pass, 1 a FAIL (or, with --require-all, a
baseline run missing from current), 2 bad input (no such directory, no records, bad W&B path).
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

from harness.record import load_records, runs_dir
from harness.report.aggregate import KEY, by_group, family_of, flatten, flatten_all

EPS = 1e-9  # a change exactly at the tolerance passes


class BadInput(Exception):
    """Input the gate cannot judge (exit 2)."""


# ---- inputs ----------------------------------------------------------------------------------

def rows_from_dir(path: str, what: str) -> list[dict]:
    directory = runs_dir(Path(path))
    if directory is None:
        raise BadInput(f"{what} {path}: no such directory")
    records, corrupt = load_records(directory)
    rows, unreadable = flatten_all(records)
    for c in corrupt + unreadable:
        print(f"warning ({what}): {c}", file=sys.stderr)
    if not rows:
        raise BadInput(f"{what} {path}: no records under {directory}")
    return rows


def _unwrap(cfg):
    """W&B run configs may hold {'value': v, 'desc': ...} leaves; give the plain values."""
    if isinstance(cfg, dict):
        if set(cfg) <= {"value", "desc"} and "value" in cfg:
            return _unwrap(cfg["value"])
        return {k: _unwrap(v) for k, v in cfg.items() if not str(k).startswith("_")}
    return cfg


def record_from_wandb(name: str, config: dict, summary: dict, metadata: dict | None) -> dict:
    """A record-shaped dict from one W&B run's config and summary, with the keys that
    harness.tracking.WandbTracker.finish writes (eval/<set>/accuracy, throughput/..., memory/...)."""
    cfg = _unwrap(dict(config or {}))
    scoring = (cfg.get("eval") or {}).get("scoring")
    evals: dict = {}
    memory: dict = {}
    throughput: dict = {}
    for key, value in (summary or {}).items():
        if m := re.fullmatch(r"eval/(.+)/(accuracy|parse_failure_rate)", key):
            evals.setdefault(m[1], {"scoring": scoring})[m[2]] = value
        elif m := re.fullmatch(r"memory/([^/]+)/(.+)", key):
            memory.setdefault(m[1], {})[m[2]] = value
        elif key.startswith("throughput/"):
            throughput[key.split("/", 1)[1]] = value
    gpu = (metadata or {}).get("gpu")
    return {"run_id": name, "status": (summary or {}).get("status") or "failed", "error": None,
            "run_info": {"model": (cfg.get("model") or {}).get("name"), "method": (cfg.get("method") or {}).get("name"),
                         "task": (cfg.get("task") or {}).get("name"), "seed": cfg.get("seed"),
                         "train_set": (cfg.get("task") or {}).get("train_set"), "config": cfg},
            "eval": evals, "memory": memory, "train_info": {"throughput": throughput} if throughput else None,
            "meta_info": {"device_name": gpu or ("cpu" if metadata else None)}}


def rows_from_wandb(spec: str) -> list[dict]:
    parts = spec.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise BadInput(f"--baseline wandb:{spec}: expected wandb:<entity>/<project>/<group>")
    entity, project, group = parts
    try:
        import wandb
    except ImportError as exc:
        raise BadInput("--baseline wandb:...: the wandb package is not installed") from exc
    try:
        runs = list(wandb.Api(timeout=30).runs(f"{entity}/{project}", filters={"group": group}))
        records = []
        for run in runs:
            try:
                metadata = run.metadata or {}
            except Exception:  # older runs may have no metadata file
                metadata = {}
            records.append(record_from_wandb(run.name, run.config, dict(run.summary), metadata))
    except Exception as exc:  # offline, no login, no such project: one message, exit 2
        reason = (str(exc).splitlines() or [""])[0].rstrip(".")
        raise BadInput(f"cannot read the W&B baseline {entity}/{project} group {group}: {type(exc).__name__}: "
                       f"{reason}. It needs network access and a W&B login "
                       f"(WANDB_API_KEY or `wandb login`); offline, pass a records directory instead "
                       f"(e.g. --baseline results/baselines/default)") from None
    if not records:
        raise BadInput(f"W&B {entity}/{project} has no runs in group {group}")
    return [flatten(r) for r in records]


def load_side(spec: str, what: str) -> list[dict]:
    if spec.startswith("wandb:"):
        return rows_from_wandb(spec[len("wandb:"):])
    return rows_from_dir(spec, what)


# ---- comparison (pure) -----------------------------------------------------------------------

def _mean(values):
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def summarise(rows: list[dict]) -> dict[tuple, dict]:
    """Per match key: seed-averaged accuracy per set, memory, throughput, devices, and the
    statuses of runs that did not finish ok."""
    out: dict[tuple, dict] = {}
    ok = [r for r in rows if r["status"] == "ok"]
    for members, stats in by_group(ok, KEY, ("mem_train_gib", "tokens_per_second")):
        out[tuple(members[0][k] for k in KEY)] = {
            "ok": members, "not_ok": [], "n": len(members),
            "acc": {s: mean for s, (mean, _) in stats["acc"].items()},
            "mem": stats["mem_train_gib"][0], "tps": stats["tokens_per_second"][0],
            "mem_kind": {r["mem_kind"] for r in members if r["mem_train_gib"] is not None},
            "devices": {r["device"] for r in members}}
    for r in rows:
        if r["status"] != "ok":  # listed, never averaged: a key with none ok has nothing to compare
            side = out.setdefault(tuple(r[k] for k in KEY), {"ok": [], "not_ok": [], "n": 0, "acc": {}, "mem": None,
                                                             "tps": None, "mem_kind": set(), "devices": set()})
            side["not_ok"].append(r)
    return out


def _set_order(task: str, sets) -> list[str]:
    fam = family_of(task)
    known = list(fam.test_sets) if fam else []
    return [s for s in known if s in sets] + sorted(s for s in sets if s not in known)


def compare(baseline: list[dict], current: list[dict], acc_drop: float = 1.0, vram_growth: float = 0.10,
            tps_drop: float = 0.20) -> list[dict]:
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
        common = [s for s in _set_order(key[2], b["acc"]) if s in c["acc"]]
        for s in _set_order(key[2], b["acc"]):
            if s not in c["acc"]:
                row(key, f"acc {s}", b["acc"][s], result="MISSING", note="set not evaluated in current")
        for s in common:
            _acc_row(row, key, f"acc {s}", b["acc"][s], c["acc"][s], acc_drop)
        if common:
            _acc_row(row, key, "acc avg", _mean([b["acc"][s] for s in common]),
                     _mean([c["acc"][s] for s in common]), acc_drop, note=f"mean of {len(common)} sets")
        _cost_rows(row, key, b, c, vram_growth, tps_drop)
    for key in sorted(set(cur) - set(base), key=str):
        if cur[key]["n"]:
            row(key, "run", result="NEW", note="not in baseline")
    return out


def _acc_row(row, key, metric, b, c, acc_drop, note=""):
    change = c - b
    row(key, metric, round(b, 4), round(c, 4), f"{change:+.2f} pts", f"-{acc_drop:g} pts",
        "FAIL" if -change > acc_drop + EPS else "PASS", note)


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
            change = c["tps"] / b["tps"] - 1 if b["tps"] else 0.0
            drop = -change
            row(key, "train tokens/s", round(b["tps"], 2), round(c["tps"], 2), f"{change:+.1%}", f"-{tps_drop:.0%}",
                "FAIL" if drop > tps_drop + EPS else "PASS")


def verdict(rows: list[dict], require_all: bool = False) -> int:
    failed = any(r["result"] == "FAIL" for r in rows) or (require_all and any(r["result"] == "MISSING" for r in rows))
    return 1 if failed else 0


def markdown(rows: list[dict]) -> str:
    if not rows:
        return "_no comparisons_"
    df = pd.DataFrame(rows).rename(columns={"train_set": "train set", "eval_limit": "items/set"})
    df["items/set"] = df["items/set"].map(lambda n: f"first {n}" if n else "all")
    for col in ("baseline", "current"):  # two decimals to read; the comparison used full precision
        # pandas holds a missing value (a NEW or MISSING row) as NaN in a numeric column: show it as missing
        df[col] = df[col].map(lambda v: "–" if v is None or (isinstance(v, float) and math.isnan(v))
                              else f"{v:.2f}" if isinstance(v, float) else v)
    df = df.fillna("–").astype(str).apply(lambda col: col.str.replace("|", "\\|", regex=False))
    return df.to_markdown(index=False, disable_numparse=True)


# ---- CLI -------------------------------------------------------------------------------------

def _fraction(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m harness.regress",
                                description="Fail (exit 1) when current runs regress against a baseline.")
    p.add_argument("--baseline", required=True,
                   help="records directory (e.g. results/baselines/default) or wandb:<entity>/<project>/<group>")
    p.add_argument("--current", default="results", help="current results directory (records under <dir>/runs)")
    p.add_argument("--acc-drop", type=_fraction, default=1.0, help="allowed accuracy drop, points (default 1.0)")
    p.add_argument("--vram-growth", type=_fraction, default=0.10,
                   help="allowed peak train memory growth, relative (default 0.10)")
    p.add_argument("--tps-drop", type=_fraction, default=0.20,
                   help="allowed train tokens/s drop, relative (default 0.20)")
    p.add_argument("--require-all", action="store_true", help="fail when a baseline run is missing from current")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        baseline = load_side(args.baseline, "baseline")
        current = load_side(args.current, "current")
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = compare(baseline, current, args.acc_drop, args.vram_growth, args.tps_drop)
    print(markdown(rows))
    counts = {k: sum(r["result"] == k for r in rows) for k in ("PASS", "FAIL", "SKIP", "MISSING", "NEW")}
    code = verdict(rows, args.require_all)
    print(f"\nregress: {len(rows)} comparisons: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v)
          + f" -> {'FAIL' if code else 'PASS'}"
          + (" (baseline runs missing; --require-all fails on them)" if counts["MISSING"] and not args.require_all
             else ""))
    return code


if __name__ == "__main__":
    raise SystemExit(main())
