"""Sweep progress: a line per run and a summary at the end (a Hydra callback).

Sweeps are plain Hydra multiruns over methods x models x tasks (presets in conf/sweep/). Each run
is isolated by harness.runner (an exception or OOM becomes a record with that status) and
resumable (a run whose record is complete is skipped: same resolved config -> same run id).
"""
from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback

from harness import record


def count_jobs(config) -> int | None:
    """How many runs the sweep will launch: the product of the sizes of its sweep overrides."""
    try:
        params = config.hydra.sweeper.get("params") or {}
        overrides = list(config.hydra.overrides.task) + [f"{k}={v}" for k, v in params.items()]
        from harness.overrides import _GroupOptions  # glob(*) over a config group needs its choices
        parsed = OverridesParser.create(config_loader=_GroupOptions()).parse_overrides(overrides)
        # a command-line override replaces the preset's value for the same key
        by_key = {o.get_key_element(): o for o in reversed(parsed)}
        return math.prod(len(list(o.sweep_iterator())) if o.is_sweep_override() else 1 for o in by_key.values())
    except Exception:  # progress display only: never fail a sweep over it
        return None


def records_since(config, since: float) -> list[dict]:
    """The runs recorded since `since` (wall clock), read by the one record reader, so the summary
    counts exactly what the report and the runner's skip check count as records."""
    rows = []
    records, _ = record.load_records(Path(str(config.results_dir), "runs"))
    for rec in records:
        try:
            if Path(rec["_path"]).stat().st_mtime < since:
                continue
        except OSError:  # removed since it was read
            continue
        info = rec.get("run_info") or {}
        rows.append({"run": f"{info.get('model')} x {info.get('method')} x {info.get('task')}", "run_id": rec.get("run_id"),
                     "status": rec.get("status"), "error": rec.get("error"), "skipped": False})
    return rows


def bar(n, total, width: int = 20) -> str:
    """A text progress bar of the runs done before run n (one line per run: readable in a log file too)."""
    if not isinstance(n, int) or not total:
        return ""
    done = round(width * (n - 1) / total)
    return f"[{'#' * done}{'.' * (width - done)}] "


# runs of this process's sweeps that did not end ok: `python -m harness` exits 1 when there are any
NOT_OK: list[str] = []


class SweepProgress(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        self.total = count_jobs(config)
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.rows: list[dict] = []

    def on_job_start(self, config, **kwargs) -> None:
        self.job_started = time.perf_counter()
        total = getattr(self, "total", None)
        n = config.hydra.job.num + 1 if "num" in config.hydra.job else "?"
        print(f"{bar(n, total)}[{n}/{total or '?'}] {config.model.name} x {config.method.name} x "
              f"{config.task.name} (seed {config.seed}){self.eta(n, total)} ...", flush=True)

    def eta(self, n, total) -> str:
        """Remaining time at the mean duration of the runs that ran (skipped ones cost nothing)."""
        ran = [r["seconds"] for r in getattr(self, "rows", []) if not r["skipped"]]
        if not ran or not isinstance(n, int) or not total:
            return ""
        left = (total - n + 1) * sum(ran) / len(ran)
        return f", ~{left / 60:.0f} min left" if left >= 60 else f", ~{left:.0f} s left"

    def on_job_end(self, config, job_return, **kwargs) -> None:
        value = getattr(job_return, "_return_value", None) or {}
        status = value.get("status") or ("error" if str(job_return.status).endswith("FAILED") else "?")
        row = {"run": f"{config.model.name} x {config.method.name} x {config.task.name}", "status": status,
               "run_id": value.get("run_id"),
               "avg": value.get("avg"), "seconds": round(time.perf_counter() - self.job_started, 1),
               "skipped": value.get("skipped", False), "error": value.get("error")}
        if hasattr(self, "rows"):
            self.rows.append(row)
        avg = f"avg {row['avg']:.1f}%" if isinstance(row["avg"], (int, float)) else ""
        note = "skipped (complete record)" if row["skipped"] else f"{status} {avg} in {row['seconds']}s"
        print(f"    -> {note}" + (f": {row['error'][:160]}" if row["error"] and status != "ok" else ""), flush=True)

    def on_multirun_end(self, config, **kwargs) -> None:
        rows = getattr(self, "rows", [])
        if not rows:  # jobs ran in other processes (submitit): summarise the records they wrote
            rows = records_since(config, getattr(self, "started_wall", 0.0))
        counts = Counter(r["status"] for r in rows)
        skipped = sum(r["skipped"] for r in rows)
        minutes = (time.perf_counter() - self.started) / 60
        print(f"\nsweep finished: {len(rows)} runs in {minutes:.1f} min; "
              + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + (f" ({skipped} skipped)" if skipped else ""))
        for r in rows:
            if r["status"] != "ok":
                print(f"  {r['status']:>13}  {r['run']}: {(r['error'] or '')[:200]}")
                NOT_OK.append(r.get("run_id") or r["run"])
        print(f"records: {config.results_dir}/runs/  tables: make report", flush=True)
