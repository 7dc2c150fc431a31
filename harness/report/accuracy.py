"""The paper-style accuracy table of one task family and one scoring: ours (seed-aggregated, with the
intervals, tests and power of report.significance), then the published rows; its notes are
report.notes'. Pure: no files.
"""
from __future__ import annotations

import pandas as pd

from harness import methods
from harness.analysis import stats
from harness.report.aggregate import averaged_family, metric_of, not_averaged
from harness.report.load import short_source
from harness.report.notes import NO_SEED_VARIANCE, accuracy_notes
from harness.report.tables import (APPROX, DAGGER, MISSING, Table, _present, by_family, eval_label, family_of_method,
                                   fmt_acc, items_label, method_rank)

SCORING_TITLE = {"generate": "generation scored as LLM-Adapters does",
                 "label": "label-word log-likelihood (LLM-Adapters format)",
                 "cloze": "cloze log-likelihood, lm-eval style (each set's standard metric)"}


# ---- headers and cells -------------------------------------------------------------------------

def avg_columns(family, scoring: str, any_overlap: bool) -> list[tuple[str, str]]:
    """(field, header) of the average columns: the paper's average (under `scoring`: a cloze average
    leaves out the sets aggregate.not_averaged names) and, when it covers a subset of the sets
    (arithmetic: 4 of 7), the all-sets average beside it."""
    fam = averaged_family(family, scoring)
    sets = list(fam.test_sets)
    dropped = [family.test_sets[s].display for s in not_averaged(scoring) if s in family.test_sets]
    if set(fam.paper_average) >= set(sets):
        cols = [("avg_paper", f"Avg ({len(sets)} sets, no {', '.join(dropped)})" if dropped else "Avg")]
    else:
        cols = [("avg_paper", "Avg (paper)"), ("avg_all", f"Avg ({len(sets)} sets)")]
    if any_overlap:
        cols.append(("avg_excluding_overlap", "Avg (no overlap)"))
    return cols


def set_headers(family, scoring: str, approx_sets: set) -> dict:
    """Each set's column header: its name, ≈ for an approximate file, its metric under cloze."""
    return {s: ts.display + (APPROX if s in approx_sets else "")
            + (f" ({metric_of(scoring, s)})" if scoring == "cloze" else "") for s, ts in family.test_sets.items()}


def fmt_interval(mean, low, high, marks: str = "") -> str:
    """45.0 [42.1, 47.9]"""
    return MISSING if not _present(mean) else f"{mean:.1f} [{low:.1f}, {high:.1f}]{marks}"


def fmt_vs(vs: dict | None) -> str:
    """+1.2 [-0.5, +2.9]*: the difference from the reference method, * when significant."""
    if not vs:
        return MISSING
    return f"{vs['diff']:+.1f} [{vs['low']:+.1f}, {vs['high']:+.1f}]" + ("*" if vs["significant"] else "")


def fmt_p(vs: dict | None) -> str:
    """raw / Holm-corrected p, '< 0.0005' where it is below the bootstrap's resolution."""
    if not vs:
        return MISSING
    return f"{stats.p_text(vs['p'], vs['p_bound'])} / {stats.p_text(vs['p_holm'], vs['p_holm_bound'])}"


def set_cell(g: dict, s: str, marks: str) -> tuple[str, dict]:
    """A set's cell: its score's mean over seeds [its 95% interval] (Wilson's where every item
    scored the same on every seed); ± the sd over seeds without predictions."""
    mean, std = g["score"].get(s, (None, None))
    ci = (g.get("set_ci") or {}).get(s)
    data = {s: mean, f"{s}_std": std, f"{s}_metric": metric_of(g["scoring"], s)}
    if g["scoring"] == "cloze":  # both metrics in the CSV, whichever the cell shows
        data.update({f"{s}_acc": g["acc"].get(s, (None,))[0], f"{s}_acc_norm": g["acc_norm"].get(s, (None,))[0]})
    if not _present(mean):
        return MISSING, data
    if not ci:
        return fmt_acc(mean, std, marks), data
    data.update({f"{s}_low": ci["low"], f"{s}_high": ci["high"], f"{s}_interval": ci["method"]})
    # both ends: with two seeds, or near 0 and 100, the interval is lopsided and a ± would misstate it
    return fmt_interval(mean, ci["low"], ci["high"], marks), data


def seeds_cell(g: dict) -> str:
    sd = g["avg_paper"][1]
    if g["n"] == 1:
        return f"n=1 ({NO_SEED_VARIANCE})"
    return f"n={g['n']}" + (f", sd {sd:.1f}" if _present(sd) else "")


# ---- rows --------------------------------------------------------------------------------------

def _avg_cells(family, g: dict, avgs) -> tuple[dict, dict]:
    cells, data = {}, {}
    paper = set(averaged_family(family, g["scoring"]).paper_average)
    for fld, _ in avgs:
        covered = paper if fld == "avg_paper" else set(family.test_sets) - (
            g["overlap"] if fld == "avg_excluding_overlap" else set())
        marks = (DAGGER if covered & g["overlap"] else "") + (APPROX if covered & g["approximate"] else "")
        mean, std = g[fld]
        ci = g.get("avg_ci") if fld == "avg_paper" else None
        cells[fld] = fmt_interval(mean, ci["low"], ci["high"], marks) if ci else fmt_acc(mean, None, marks)
        data[fld], data[f"{fld}_std"] = mean, std
        if ci:
            data[f"{fld}_low"], data[f"{fld}_high"] = ci["low"], ci["high"]
    return cells, data


def _vs_data(vs: dict | None) -> dict:
    if not vs:
        return {}
    ref = vs["reference"]
    return {f"vs_{ref}": vs["diff"], f"vs_{ref}_low": vs["low"], f"vs_{ref}_high": vs["high"], f"vs_{ref}_se": vs["se"],
            "p": vs["p"], "p_is_upper_bound": vs["p_bound"], "p_holm": vs["p_holm"],
            "p_holm_is_upper_bound": vs["p_holm_bound"], "significant": vs["significant"], "mdd_80": vs["mdd"],
            "mdd_alpha": vs["alpha"], "resamples": vs["resamples"], "seed_variance": vs["seed_variance"],
            "paired_on_seeds": vs["paired_seeds"], "test": vs["test"]}


def _our_rows(family, groups: list[dict], avgs: list[tuple[str, str]]) -> list[dict]:
    rows = []
    for g in groups:
        cells, data = {}, {}
        for s in family.test_sets:
            marks = (DAGGER if s in g["overlap"] else "") + (APPROX if s in g["approximate"] else "")
            cells[s], more = set_cell(g, s, marks)
            data.update(more)
        avg_cells, avg_data = _avg_cells(family, g, avgs)
        cells.update(avg_cells, vs_reference=fmt_vs(g.get("vs_reference")), p=fmt_p(g.get("vs_reference")))
        rows.append({"source": "ours", "model": g["model"], "method": g["method"],
                     "family": family_of_method(g["method"]), "train_set": g["train_set"],
                     "eval": eval_label(g), "items": items_label(g["eval_limit"]),
                     "variant": g["variant"], "lr": f"{g['lr']:.2g}" if g.get("lr") else MISSING,
                     "seeds": seeds_cell(g), "cells": cells,
                     "data": {"source": "ours", "model": g["model"], "method": g["method"],
                              "family": family_of_method(g["method"]), "train_set": g["train_set"],
                              "scoring": g["scoring"], "decoding": g["decoding"],
                              "eval_precision": g["eval_precision"], "eval_limit": g["eval_limit"],
                              "variant": g["variant"], "lr": g.get("lr"), "n_seeds": g["n"], **data, **avg_data,
                              **_vs_data(g.get("vs_reference")),
                              "overlapping_sets": ";".join(sorted(g["overlap"])),
                              "approximate_sets": ";".join(sorted(g["approximate"])),
                              "run_ids": ";".join(g["run_ids"])}})
    return rows


def _published_rows(family, published: pd.DataFrame, avgs, paper_train_set: str | None) -> list[dict]:
    pub = published[published["family"] == family.name]
    rows = []
    keys = ["source", "model", "method", "rank", "lr"]
    for key, part in pub.groupby(keys, dropna=False, sort=False):
        src, model, published_method, rank, lr = key
        # a source's own name for one of ours (LLM-Adapters' "prefix" is prefix_tuning): shown as ours
        method = methods.canonical(published_method)
        values = dict(zip(part["task"], part["accuracy"]))
        variant = ", ".join(p for p in ((f"r={rank:g}" if _present(rank) else ""),
                                        (f"lr={lr:g}" if _present(lr) else "")) if p)
        cells, data = {}, {}
        for s in family.test_sets:
            cells[s] = fmt_acc(values.get(s))
            data[s] = values.get(s)
        for fld, _ in avgs:  # the published 'avg' is the paper's average, as printed
            v = values.get("avg") if fld == "avg_paper" else None
            cells[fld], data[fld] = fmt_acc(v), v
        # method '-' rows are zero-shot references (GPT-3.5 / ChatGPT): trained on nothing
        train_set = "-" if method == "-" else (paper_train_set or "paper")
        rows.append({"source": f"published: {short_source(src)}", "model": model, "method": method,
                     "family": family_of_method(method), "train_set": train_set, "eval": "generate (paper)",
                     "items": "all", "variant": variant, "lr": f"{lr:.2g}" if _present(lr) else MISSING,
                     "seeds": "", "cells": {**cells, "vs_reference": MISSING, "p": MISSING},
                     "data": {"source": f"published: {src}", "model": model, "method": method,
                              "published_method": published_method, "family": family_of_method(method),
                              "train_set": train_set, "scoring": "generate", "decoding": "paper",
                              "eval_limit": 0, "variant": variant, "n_seeds": None, **data}})
    rows.sort(key=lambda r: (r["model"], method_rank(r["method"]), r["source"], r["variant"]))
    return rows


# ---- the table ---------------------------------------------------------------------------------

def accuracy_table(family, groups: list[dict], published: pd.DataFrame | None = None,
                   paper_train_set: str | None = None, scoring: str = "generate") -> Table:
    """The paper-style table of one task family and one scoring: ours (seed-aggregated), then the
    published rows, which are generated answers and so sit only beside generate-scored ones."""
    ours = [g for g in groups if g["task"] == family.name and g["scoring"] == scoring
            and g["acc"]]  # a run that read no test set (a learning-rate grid point) has no row here
    if scoring != "generate":
        published = None
    avgs = avg_columns(family, scoring, any(g["overlap"] for g in ours))
    rows = _our_rows(family, ours, avgs)
    if published is not None:
        rows += _published_rows(family, published, avgs, paper_train_set)
    rows = by_family(rows)
    headers = set_headers(family, scoring, {s for g in ours for s in g["approximate"]})
    headers.update(dict(avgs))
    reference = next((g["vs_reference"]["reference"] for g in ours if g.get("vs_reference")), None)
    if reference:
        headers.update(vs_reference=f"vs {reference} [95% CI]", p="p (raw / Holm)")
    display, data = _frames(rows, headers)
    limits = sorted({g["eval_limit"] for g in ours})
    title = f"{family.name.capitalize()} reasoning: accuracy (%), {SCORING_TITLE.get(scoring, scoring)}"
    if len(limits) == 1 and limits[0]:
        title += f", ours on the first {limits[0]} items per set"
    return Table(title, display, data, accuracy_notes(family, scoring, ours, rows, limits))


def _frames(rows: list[dict], headers: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    optional = {"train_set": "train set", "eval": "eval", "items": "items/set", "variant": "variant"}
    ours_rows = [r for r in rows if r["source"] == "ours"]
    varies = {"train_set": len({r["train_set"] for r in rows}) > 1,  # ours vs the paper's set too
              "eval": len({r["eval"] for r in rows}) > 1,
              "items": len({r["items"] for r in ours_rows}) > 1,  # one limit for all: said in the title
              "variant": any(r["variant"] for r in rows)}
    columns = ["source", "model", "method", "family"] + [c for c in optional if varies[c]] + ["lr", "seeds"]
    display = pd.DataFrame([{**{optional.get(c, c): r[c] for c in columns},
                             **{headers[k]: v for k, v in r["cells"].items() if k in headers}} for r in rows],
                           columns=[optional.get(c, c) for c in columns] + list(headers.values()))
    data = pd.DataFrame([r["data"] for r in rows])
    if "n_seeds" in data:
        data["n_seeds"] = data["n_seeds"].astype("Int64")  # published rows have none: blank, not 1.0
    return display, data
