"""The two sides of a comparison, and baselines: a records directory (a results directory or a
saved baseline), a W&B group, or a fresh sweep of the code in front of us; saving a sweep as a
named baseline and publishing one to a W&B group."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from harness.record import atomic, env
from harness.record import Record, load_records, runs_dir
from harness.report.aggregate import flatten, flatten_all

BASELINE_FILE = "baseline.json"  # what made a saved baseline: its sweep's overrides and code
BASELINES = Path("results/baselines")


class BadInput(Exception):
    """Input the gate cannot judge (exit 2)."""


# ---- records directories ---------------------------------------------------------------------

def rows_from_dir(path: str | Path, what: str) -> list[dict]:
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


def baseline_overrides(path: str | Path) -> list[str] | None:
    """The sweep overrides a saved baseline was made with (None for a plain records directory)."""
    try:
        return json.loads((Path(path) / BASELINE_FILE).read_text())["overrides"]
    except (OSError, ValueError, KeyError):
        return None


def records_code(source: Path) -> dict:
    """The code identity the records carry (they may predate the code saving them); a mix is named."""
    directory = runs_dir(source)
    records = load_records(directory)[0] if directory else []
    records = [s.record for s in records]
    codes = {r.code_id: r.meta_info.code.model_dump(exclude_none=True) for r in records if r.code_id}
    if len(codes) == 1:  # one code (commits that changed no source file share it): their git shas listed
        code = dict(next(iter(codes.values())))
        code["git_shas"] = sorted({r.meta_info.code.git_sha or "" for r in records} - {""})
        return {k: v for k, v in code.items() if k not in ("git_sha", "git_dirty")}
    return {"code_id": None, "mixed": sorted(codes)} if codes else env.code_identity()


def save_baseline(target: Path, source: Path, overrides: list[str]) -> dict:
    """Copy a sweep's (or a study's) records, predictions and learning-rate selection into `target`
    (swapped in whole) with what made them; returns that description (baseline.json)."""
    meta = {"overrides": overrides, "code": records_code(source), "created": datetime.now(timezone.utc).isoformat(),
            "made_by": f"python -m harness.regress --save {target.name} {' '.join(overrides)}"}

    def fill(tmp: str) -> None:
        for part in ("runs", "predictions"):
            if (source / part).is_dir():
                shutil.copytree(source / part, Path(tmp) / part)
        if (source / "selection.json").is_file():
            shutil.copy(source / "selection.json", Path(tmp) / "selection.json")
        atomic.write_json(Path(tmp) / BASELINE_FILE, meta)
    atomic.replace_dir(target, fill)
    return meta


# ---- a fresh sweep of this code --------------------------------------------------------------

def run_sweep(overrides: list[str], results_dir: Path, cache_dir: str) -> int:
    """`python -m harness -m <overrides>` (or `python -m harness.study` for a `study=` baseline) into
    `results_dir`, reusing only records this code made; returns its exit status (1 when some run did
    not end ok: the comparison then says which)."""
    if any(o.startswith("study=") for o in overrides):  # a study: its tuning and final runs, redone
        cmd = [sys.executable, "-m", "harness.study", *overrides, f"study.results_dir={results_dir}"]
    else:
        cmd = [sys.executable, "-m", "harness", "-m", *overrides, f"results_dir={results_dir}"]
    cmd += [f"cache_dir={cache_dir}", "reuse=same_code"]
    print(f"[regress] {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
    return subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}).returncode


# ---- W&B -------------------------------------------------------------------------------------

def _unwrap(cfg):
    """W&B run configs may hold {'value': v, 'desc': ...} leaves; give the plain values."""
    if isinstance(cfg, dict):
        if set(cfg) <= {"value", "desc"} and "value" in cfg:
            return _unwrap(cfg["value"])
        return {k: _unwrap(v) for k, v in cfg.items() if not str(k).startswith("_")}
    return cfg


def record_from_wandb(name: str, config: dict, summary: dict) -> Record:
    """A record from one W&B run's config and the summary harness.record.tracking.summary_of
    wrote (eval/<set>/accuracy|n, train/losses, throughput/..., memory/..., meta/...)."""
    cfg = _unwrap(dict(config or {}))
    summary = dict(summary or {})
    scoring = cfg.get("eval", {}).get("scoring")
    evals: dict = {}
    memory: dict = {}
    throughput: dict = {}
    meta: dict = {}
    for key, value in summary.items():
        if m := re.fullmatch(r"eval/(.+)/(accuracy|parse_failure_rate|n)", key):
            evals.setdefault(m[1], {"scoring": scoring})[m[2]] = value
        elif m := re.fullmatch(r"memory/([^/]+)/(.+)", key):
            memory.setdefault(m[1], {})[m[2]] = value
        elif key.startswith("throughput/"):
            throughput[key.split("/", 1)[1]] = value
        elif key.startswith("meta/"):
            meta[key.split("/", 1)[1]] = value
    losses = summary.get("train/losses")
    train_info = {"throughput": throughput, "losses": list(losses or [])} if throughput or losses else None
    # the run's names (model, method, task, seed, train_set) come from its config (RunInfo)
    return Record.parse({"run_id": summary.get("run_id") or name, "status": summary.get("status") or "failed",
                         "error": None, "run_info": {"config": cfg}, "eval": evals, "memory": memory,
                         "train_info": train_info, "meta_info": meta})


def _wandb_spec(spec: str) -> tuple[str, str, str]:
    parts = spec.split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise BadInput(f"wandb:{spec}: expected wandb:<entity>/<project>/<group>")
    return parts[0], parts[1], parts[2]


def rows_from_wandb(spec: str) -> list[dict]:
    entity, project, group = _wandb_spec(spec)
    try:
        import wandb
        runs = list(wandb.Api(timeout=30).runs(f"{entity}/{project}", filters={"group": group}))
        records = [record_from_wandb(run.name, run.config, dict(run.summary)) for run in runs]
    except Exception as exc:  # offline, no login, no such project: one message, exit 2
        reason = (str(exc).splitlines() or [""])[0].rstrip(".")
        raise BadInput(f"cannot read the W&B baseline {entity}/{project} group {group}: {type(exc).__name__}: "
                       f"{reason}. It needs network access and a W&B login "
                       f"(WANDB_API_KEY or `wandb login`); offline, pass a records directory instead "
                       f"(e.g. --baseline results/baselines/default)") from None
    if not records:
        raise BadInput(f"W&B {entity}/{project} has no runs in group {group}")
    return [flatten(r) for r in records]


def publish_wandb(spec: str, baseline: Path) -> list[str]:
    """Log every record of a baseline as one W&B run of group <group> (online with a key, else
    offline: `wandb sync` later); returns the local run directories."""
    from harness.record.tracking import resolve_mode, summary_of
    entity, project, group = _wandb_spec(spec)
    directory = runs_dir(baseline)
    if directory is None:
        raise BadInput(f"--baseline {baseline}: no such directory")
    records, _ = load_records(directory)
    if not records:
        raise BadInput(f"--baseline {baseline}: no records to publish")
    import wandb
    wandb_dir = Path(baseline) / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for _, rec in records:
        run = wandb.init(entity=entity, project=project, group=group, name=rec.run_id, job_type="baseline",
                         dir=str(wandb_dir), mode=resolve_mode("auto"), reinit="finish_previous",
                         config=rec.run_info.config)
        run.summary.update(summary_of(rec))
        out.append(os.path.dirname(run.dir))
        run.finish()
    return out


def load_side(spec: str, what: str) -> list[dict]:
    if spec.startswith("wandb:"):
        return rows_from_wandb(spec[len("wandb:"):])
    return rows_from_dir(spec, what)
