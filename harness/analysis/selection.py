"""Choosing a learning rate from a study's tuning runs: one rule, used by harness.study when it picks
and by the report when it tables the grid (so the table marks the rate the study trained).

Pure Python on records: no model, no test data (a tuning record holds validation numbers only).
Besides the choice: where the winner sits in its grid (interior, at an end, at the study's cap),
the next grid point when it sits at an end (harness.study extends the grid by its own factor), the
size of the validation set and the standard error of the criterion, and whether the winner's margin
over the runner-up is within noise.
"""
from __future__ import annotations

import math

RULE = "lowest final validation loss (validation accuracy breaks ties); a run not ok never wins"
NOISE_SES = 2.0  # a winner whose margin over the runner-up is below this many standard errors: within noise
MIN_HORIZON = 0.5  # the tuning runs' optimizer steps, at least this fraction of the final runs'
_TOL = 1e-9


def is_tuning(record) -> bool:
    """A study's grid run (stage=tune): it reads no test set and has no accuracy to table."""
    return record.run_info.stage == "tune"


def grid_point(record) -> dict:
    """What the choice needs from one tuning run (a harness.record.schema.Record), with the validation
    set's size and the standard error of its loss (None when the record cannot tell)."""
    info = record.train_info
    losses = info.validation_loss if info else []
    accuracy = info.validation_accuracy if info else None
    se, se_from = loss_se(record)
    return {"lr": float(record.run_info.setting("method.lr") or 0), "status": record.status,
            "run_id": record.run_id, "validation_loss": losses[-1]["loss"] if losses else None,
            "validation_accuracy": accuracy.accuracy if accuracy else None,
            "validation_items": record.data.validation_items,
            "validation_tokens": getattr(record.validation_final, "label_tokens", None),
            "validation_se": se, "se_from": se_from}


def _ranked(grid: list[dict]) -> list[dict]:
    usable = [g for g in grid if g["status"] == "ok" and g["validation_loss"] is not None]
    return sorted(usable, key=lambda g: (g["validation_loss"], -(g["validation_accuracy"] or 0), g["lr"]))


def choose(grid: list[dict]) -> dict | None:
    """The winning grid point, or None when no run trained to the end."""
    ranked = _ranked(grid)
    return ranked[0] if ranked else None


def runner_up(grid: list[dict]) -> dict | None:
    """The second grid point by the same rule (None with fewer than two usable points)."""
    ranked = _ranked(grid)
    return ranked[1] if len(ranked) > 1 else None


def grid_edge(grid: list[dict], best: dict) -> str | None:
    """'lowest' / 'highest' when the winner is an end of the grid (the optimum may lie beyond it)."""
    rates = sorted(g["lr"] for g in grid)
    if len(rates) < 2:
        return None
    return "lowest" if best["lr"] == rates[0] else "highest" if best["lr"] == rates[-1] else None


# ---- extending the grid --------------------------------------------------------------------------

def grid_factor(multipliers: list[float]) -> float:
    """The ratio between neighbouring grid points (ValueError unless the grid is geometric)."""
    m = sorted(multipliers)
    if len(m) < 2 or len(set(m)) < len(m):
        raise ValueError(f"a grid to extend needs at least two distinct rates, not {multipliers}")
    ratios = [b / a for a, b in zip(m, m[1:])]
    if any(abs(r / ratios[0] - 1) > 1e-6 for r in ratios):
        raise ValueError(f"the grid {multipliers} has no single factor between neighbouring rates "
                         f"(ratios {[round(r, 4) for r in ratios]}); give a geometric grid, e.g. [0.5, 1, 2, 4]")
    return ratios[0]


def _tidy(x: float) -> float:
    return float(f"{x:.12g}")  # 0.5 * 2 * 2 ... stays the number a person would write


def next_multiplier(multipliers: list[float], best: float, factor: float, cap: list[float]) -> float | None:
    """The grid point to add when the winner `best` is an end of the grid (`multipliers` of the
    recipe's rate): one factor beyond it, if that stays within `cap` ([min, max] multipliers);
    None when the winner is interior or the cap is reached."""
    m = sorted(multipliers)
    if len(m) < 2:
        return None
    if math.isclose(best, m[-1], rel_tol=_TOL):
        nxt = _tidy(best * factor)
        return nxt if nxt <= cap[1] * (1 + _TOL) else None
    if math.isclose(best, m[0], rel_tol=_TOL):
        nxt = _tidy(best / factor)
        return nxt if nxt >= cap[0] * (1 - _TOL) else None
    return None


def position(multipliers: list[float], best: float, factor: float | None, cap: list[float] | None) -> str:
    """Where the winner sits: 'interior'; 'at the cap' (an end of the grid that the cap stops from
    extending: the optimum may lie beyond the cap); 'grid edge' (an end of a grid not extended)."""
    m = sorted(multipliers)
    at_end = len(m) >= 2 and (math.isclose(best, m[0], rel_tol=_TOL) or math.isclose(best, m[-1], rel_tol=_TOL))
    if not at_end:
        return "interior"
    if factor is None or cap is None:
        return "grid edge"
    return "at the cap" if next_multiplier(m, best, factor, cap) is None else "grid edge"


def note(entry: dict | None, edge: str | None = None) -> str:
    """The grid table's note for one method: from its selection.json entry when there is one
    ('interior', 'at the cap (highest rate)', ...; ', within noise' when the margin over the
    runner-up is below NOISE_SES standard errors), else from the grid alone (`edge`)."""
    if not entry or "position" not in entry:
        return f"{edge} rate of the grid" if edge else ""
    text = entry["position"]
    if text != "interior":
        text += f" ({entry.get('grid_edge')} rate)" if entry.get("grid_edge") else ""
    if entry.get("within_noise"):
        text += f", within noise (margin < {NOISE_SES:g} SE)"
    return text


# ---- the size of the validation set and the noise of the criterion --------------------------------

def example_losses(record) -> tuple[list[float], list[int]] | None:
    """Per-example (token-mean loss, label tokens) of the final validation pass, when recorded."""
    d = record.validation_final
    losses, tokens = (d.example_loss, d.example_tokens) if d else (None, None)
    if not losses or not tokens or len(losses) != len(tokens):
        return None
    return list(losses), list(tokens)


def ratio_se(losses: list[float], tokens: list[int]) -> float | None:
    """Standard error of a token-mean loss sum(l_i n_i) / sum(n_i) over examples i (the ratio
    estimator's delta-method variance: examples are the sampling unit, not tokens)."""
    k, total = len(losses), sum(tokens)
    if k < 2 or total <= 0:
        return None
    mean = sum(l * n for l, n in zip(losses, tokens)) / total
    z = [n * (l - mean) for l, n in zip(losses, tokens)]
    return math.sqrt(k / (k - 1) * sum(x * x for x in z)) / total


def paired_se(a: tuple[list[float], list[int]], b: tuple[list[float], list[int]]) -> float | None:
    """Standard error of the difference of two token-mean losses over the same examples."""
    (la, n), (lb, nb) = a, b
    if n != nb:
        return None
    k, total = len(n), sum(n)
    if k < 2 or total <= 0:
        return None
    ma = sum(x * t for x, t in zip(la, n)) / total
    mb = sum(x * t for x, t in zip(lb, n)) / total
    z = [t * ((x - ma) - (y - mb)) for x, y, t in zip(la, lb, n)]
    return math.sqrt(k / (k - 1) * sum(v * v for v in z)) / total


def loss_se(record) -> tuple[float | None, str | None]:
    """(standard error of the final validation loss, how it was obtained). From the per-example
    validation losses when the record holds them; else approximated from the spread of the last
    ten training-step losses (each a mean over train.batch_size examples) scaled to the validation
    set's size, sd x sqrt(batch / validation items): training and validation examples come from
    the same set, and the trend over those steps only inflates it."""
    ex = example_losses(record)
    if ex is not None:
        se = ratio_se(*ex)
        return (round(se, 5), "per-example validation losses") if se is not None else (None, None)
    steps = (record.train_info.losses if record.train_info else [])[-10:]
    items = record.data.validation_items
    batch = record.run_info.setting("train.batch_size")
    if len(steps) < 3 or not items or not batch:
        return None, None
    mean = sum(steps) / len(steps)
    sd = math.sqrt(sum((x - mean) ** 2 for x in steps) / (len(steps) - 1))
    return round(sd * math.sqrt(batch / items), 5), "approximate: training-step loss spread (no per-example validation losses)"


def noise(best: dict, second: dict | None, best_record=None, second_record=None) -> dict:
    """The winner's margin over the runner-up and its standard error: paired over the same
    validation examples when both records hold per-example losses, else from the two points'
    standard errors as if independent (larger: the same examples make the losses move together).
    within_noise: margin < NOISE_SES standard errors (None when no error can be estimated)."""
    if second is None:
        return {"runner_up_lr": None, "margin": None, "margin_se": None, "within_noise": None,
                "margin_se_from": "no runner-up"}
    margin = second["validation_loss"] - best["validation_loss"]
    a = example_losses(best_record) if best_record else None
    b = example_losses(second_record) if second_record else None
    se = paired_se(a, b) if a and b else None
    how = "paired over the same validation examples"
    if se is None:
        sa, sb = best.get("validation_se"), second.get("validation_se")
        se = math.sqrt(sa ** 2 + sb ** 2) if sa is not None and sb is not None else None
        how = f"unpaired ({best.get('se_from')})" if se is not None else "unknown: the records hold no spread"
    return {"runner_up_lr": second["lr"], "margin": round(margin, 5),
            "margin_se": round(se, 5) if se is not None else None,
            "within_noise": (margin < NOISE_SES * se) if se is not None else None, "margin_se_from": how}
