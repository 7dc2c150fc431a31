"""Estimate vs measurement: every finished CUDA record in <results>/runs.

A record qualifies when status is ok, meta_info.device_type is cuda and it has
memory.train.peak_allocated_gib. The estimate is rebuilt from run_info.config (the resolved run
config), with the loss the run actually used (train_info.fused_loss), and compared with that peak.
"""
from __future__ import annotations

import json
from pathlib import Path

from harness import record
from harness.errors import HarnessError
from harness.vram import constants as C
from harness.vram.estimate import as_dict, estimate

NO_RECORDS = "no CUDA records in {runs}: validation needs GPU runs"


def cuda_records(results_dir: Path) -> list[tuple[Path, record.Record]]:
    """(file, record) of the qualifying records, read by the one record reader (harness.record):
    a corrupt or partial file is not a record here either."""
    out = []
    for path, rec in record.load_records(Path(results_dir) / "runs")[0]:
        if not rec.ok or rec.meta_info.device_type != "cuda":
            continue
        peak = rec.phase_memory("train").peak_allocated_gib
        if peak is not None and peak > 0 and rec.run_info.config:
            out.append((path, rec))
    return out


def compare(rec: record.Record) -> dict:
    cfg = json.loads(json.dumps(rec.run_info.config))  # a copy we may adjust
    used = rec.train_info.fused_loss if rec.train_info else None
    if used in ("liger", "torch"):
        cfg.setdefault("train", {})["fused_loss"] = used
    cfg["device"] = "cuda"
    measured = float(rec.phase_memory("train").peak_allocated_gib)
    row = {"run_id": rec.run_id, "model": rec.run_info.model, "method": rec.run_info.method, "measured_gib": measured}
    try:
        d = as_dict(estimate(cfg), rec.meta_info.device_memory_gib)
    except HarnessError as exc:
        return {**row, "error": str(exc)}
    st = d["setup"]
    return {**row, "micro_batch_size": st["micro_batch_size"], "seq_len": st["seq_len"],
            "gradient_checkpointing": st["gradient_checkpointing"], "fused_loss": st["fused_loss"],
            "predicted_gib": d["predicted_peak_gib"], "error_pct": 100.0 * (d["predicted_peak_gib"] / measured - 1),
            "device": rec.meta_info.device_name}


def validate(results_dir: Path) -> list[dict]:
    return [compare(rec) for _, rec in cuda_records(results_dir)]


def format_validation(rows: list[dict], runs_dir: Path) -> str:
    if not rows:
        return NO_RECORDS.format(runs=runs_dir)
    out = ["| run | model | method | micro batch | seq | ckpt | loss | measured GiB | predicted GiB | error |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['run_id']} | {r['model']} | {r['method']} | | | | | {r['measured_gib']:.2f} | "
                       f"error: {r['error']} | |")
            continue
        out.append(f"| {r['run_id']} | {r['model']} | {r['method']} | {r['micro_batch_size']} | {r['seq_len']} | "
                   f"{'on' if r['gradient_checkpointing'] else 'off'} | {r['fused_loss']} | {r['measured_gib']:.2f} | "
                   f"{r['predicted_gib']:.2f} | {r['error_pct']:+.1f}% |")
    errs = [abs(r["error_pct"]) for r in rows if "error_pct" in r]
    if errs:
        out.append("")
        out.append(f"{len(errs)} runs: mean |error| {sum(errs) / len(errs):.1f}%, max {max(errs):.1f}% "
                   f"(tolerance {C.VALIDATION_TOLERANCE:.0%}). Sequence length is train.cutoff_len: runs whose "
                   "longest batch was shorter peak lower than predicted.")
    return "\n".join(out)


def failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "error" in r or abs(r["error_pct"]) > 100 * C.VALIDATION_TOLERANCE]
