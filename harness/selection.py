"""Choosing a learning rate from a study's tuning runs: one rule, used by harness.study when it picks
and by the report when it tables the grid (so the table marks the rate the study trained).

Pure Python on records: no model, no test data (a tuning record holds validation numbers only).
"""
from __future__ import annotations

RULE = "lowest final validation loss (validation accuracy breaks ties); a run not ok never wins"


def is_tuning(record: dict) -> bool:
    """A study's grid run (tags.stage=tune): it reads no test set and has no accuracy to table."""
    cfg = (record.get("run_info") or {}).get("config") or {}
    return (cfg.get("tags") or {}).get("stage") == "tune"


def grid_point(record: dict) -> dict:
    """What the choice needs from one tuning run."""
    info = record.get("train_info") or {}
    losses = info.get("validation_loss") or []
    cfg = (record.get("run_info") or {}).get("config") or {}
    return {"lr": float((cfg.get("method") or {}).get("lr") or 0), "status": record.get("status"),
            "run_id": record.get("run_id"), "validation_loss": losses[-1]["loss"] if losses else None,
            "validation_accuracy": (info.get("validation_accuracy") or {}).get("accuracy")}


def choose(grid: list[dict]) -> dict | None:
    """The winning grid point, or None when no run trained to the end."""
    usable = [g for g in grid if g["status"] == "ok" and g["validation_loss"] is not None]
    if not usable:
        return None
    return min(usable, key=lambda g: (g["validation_loss"], -(g["validation_accuracy"] or 0), g["lr"]))


def grid_edge(grid: list[dict], best: dict) -> str | None:
    """'lowest' / 'highest' when the winner is an end of the grid (the optimum may lie beyond it)."""
    rates = sorted(g["lr"] for g in grid)
    if len(rates) < 2:
        return None
    return "lowest" if best["lr"] == rates[0] else "highest" if best["lr"] == rates[-1] else None
