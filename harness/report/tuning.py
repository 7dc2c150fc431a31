"""A study's learning-rate grid as a table: every rate tried per (model, method, task), its final
validation loss and accuracy, and the rate harness.analysis.selection picks (the one the final runs trained
with). Tuning records read no test set, so they are kept out of the accuracy and cost tables."""
from __future__ import annotations

from collections import defaultdict

import pandas as pd

from harness.analysis import selection
from harness.report.tables import MISSING, Table


def _cell(point: dict, chosen: bool) -> str:
    if point["status"] != "ok" or point["validation_loss"] is None:
        text = f"{point['lr']:.2g}: {point['status']}"
    else:
        acc = point["validation_accuracy"]
        text = f"{point['lr']:.2g}: {point['validation_loss']:.3f}" + (f" ({acc:.0f}%)" if acc is not None else "")
    return f"{text} ✓" if chosen else text


def selection_table(records: list, chosen: dict | None = None) -> Table | None:
    """None when there are no tuning records (a plain sweep). `chosen`: the study's selection.json
    "selection" (method -> entry), whose position (interior / at the cap / grid edge) and noise flag
    the note shows; without it the note comes from the grid alone."""
    grids = defaultdict(list)
    for rec in records:
        info = rec.run_info
        grids[(info.model, info.method, info.task)].append(selection.grid_point(rec))
    if not grids:
        return None
    rows = []
    for (model, method, task), grid in grids.items():
        grid.sort(key=lambda g: g["lr"])
        best = selection.choose(grid)
        edge = selection.grid_edge(grid, best) if best else None
        entry = (chosen or {}).get(method) or {}
        se = (entry.get("validation") or {}).get("loss_se")
        rows.append({"model": model, "method": method, "task": task,
                     "grid: lr: validation loss (accuracy)": " · ".join(_cell(g, g is best) for g in grid),
                     "chosen lr": f"{best['lr']:.2g}" if best else MISSING,
                     "loss SE": f"{se:.3f}" if se is not None else MISSING,
                     "note": selection.note(entry or None, edge)})
    data = pd.DataFrame(rows)
    notes = _design_notes(list((chosen or {}).values())) + [f"Chosen by the {selection.RULE}; ✓: the chosen rate, the one the final runs trained with.",
             "Validation: a fixed held-out slice of the training set (validation.size records, the same for "
             "every rate and seed); accuracy on its first validation.accuracy_items records. No test set is read.",
             "interior: a tried rate on each side; at the cap: the grid was extended by its factor to "
             "study.lr_cap and the chosen rate is its end (the optimum may lie beyond it); grid edge: an end of "
             "a grid not extended; within noise: margin over the runner-up < 2 standard errors of the "
             "validation loss."]
    return Table("Learning-rate selection (the study's tuning runs)", data, data, notes)


def _design_notes(entries: list[dict]) -> list[str]:
    """The tuning horizon and the validation set's size, as the selection recorded them (one line each
    when every method shares them, per value otherwise)."""
    horizons = sorted({(h["tune_steps"], h["final_steps"]) for e in entries if (h := e.get("horizon"))})
    sizes = sorted({v["items"] for e in entries if (v := e.get("validation")) and v.get("items")})
    notes = [f"Tuning horizon: {tune} optimizer steps per tuning run, {tune / final:.2g}x the final runs' {final}."
             for tune, final in horizons]
    if sizes:
        notes.append(f"Validation size: {', '.join(map(str, sizes))} records; loss SE: the standard error of the chosen "
                     f"rate's validation loss over those records (selection.json: how it was computed, and the "
                     f"margin over the runner-up with its own standard error).")
    return notes
