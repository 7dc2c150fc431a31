"""Sweep progress: a line per run and a summary at the end (a Hydra callback).

Sweeps are plain Hydra multiruns over methods x models x tasks (presets in conf/sweep/). Each run
is isolated by harness.pipeline.runner (an exception or OOM becomes a record with that status) and
resumable (a run whose record is complete is skipped: same resolved config -> same run id).
"""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from hydra.experimental.callback import Callback

from harness import record
from harness.ui.progress import RunProgress


def count_jobs(config) -> int | None:
    """How many runs the sweep will launch (harness.config.overrides.runs_of: what Hydra's sweeper expands)."""
    try:
        from harness.config.overrides import parse, runs_of
        params = config.hydra.sweeper.get("params") or {}
        return len(runs_of(parse([f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task))))
    except Exception:  # progress display only: never fail a sweep over it
        return None


def records_since(config, since: float) -> list[dict]:
    """The runs recorded since `since` (wall clock), read by the one record reader, so the summary
    counts exactly what the report and the runner's skip check count as records."""
    rows = []
    records, _ = record.load_records(Path(str(config.results_dir), "runs"))
    for path, rec in records:
        try:
            if path.stat().st_mtime < since:
                continue
        except OSError:  # removed since it was read
            continue
        info = rec.run_info
        rows.append({"run": f"{info.model} x {info.method} x {info.task}", "run_id": rec.run_id,
                     "status": rec.status, "error": rec.error, "skipped": False})
    return rows


class SweepProgress(Callback):
    def on_multirun_start(self, config, **kwargs) -> None:
        self.progress = RunProgress(count_jobs(config))
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.rows: list[dict] = []

    def on_job_start(self, config, **kwargs) -> None:
        if not hasattr(self, "progress"):  # a job in its own process (submitit): no sweep-wide count
            self.progress = RunProgress(None)
        print(f"{self.progress.start()} {config.model.name} x {config.method.name} x {config.task.name} "
              f"(seed {config.seed}) ...", flush=True)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        value = getattr(job_return, "_return_value", None) or {}
        status = value.get("status") or ("error" if str(job_return.status).endswith("FAILED") else "?")
        row = {"run": f"{config.model.name} x {config.method.name} x {config.task.name}", "status": status,
               "run_id": value.get("run_id"),
               "avg": value.get("avg"), "seconds": round(self.progress.finish(value.get("skipped", False)), 1),
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
        print(f"records: {config.results_dir}/runs/  tables: make report", flush=True)
