"""Tables from aggregated groups: paper-style accuracy per task family, efficiency, failures.

Each builder returns a `Table`: a display frame (formatted strings, for Markdown and LaTeX), a
data frame (plain numbers, for CSV), a title and footnotes. Builders are pure: no files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness import methods
from harness.report.aggregate import method_rank
from harness.report.load import short_source

DAGGER = "†"
APPROX = "≈"
MISSING = "–"


@dataclass
class Table:
    title: str
    display: pd.DataFrame
    data: pd.DataFrame
    notes: list[str] = field(default_factory=list)


# ---- formatting ------------------------------------------------------------------------------

def _present(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def fmt_acc(mean, std=None, marks: str = "") -> str:
    """45.0, or 45.0 ± 1.2 over seeds; marks (†, ≈) appended."""
    if not _present(mean):
        return MISSING
    return (f"{mean:.1f} ± {std:.1f}" if _present(std) else f"{mean:.1f}") + marks


def fmt_count(n) -> str:
    """4194304 -> 4.19M: parameter counts as the papers print them."""
    if not _present(n):
        return MISSING
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def fmt_num(v, digits: int = 3) -> str:
    """Significant digits, no scientific notation for ordinary magnitudes."""
    if not _present(v):
        return MISSING
    if v == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(v)))))
    return f"{v:,.{decimals}f}"


SCORING_TITLE = {"generate": "generation scored as LLM-Adapters does",
                 "label": "label-word log-likelihood (LLM-Adapters format)",
                 "cloze": "cloze log-likelihood, lm-eval style (acc / acc_norm)"}


def fmt_forgetting(mean, low, high) -> str:
    """+2.1 [-0.8, 5.0]: points forgotten (before - after) with the paired bootstrap interval."""
    if not _present(mean):
        return MISSING
    interval = f" [{low:+.1f}, {high:+.1f}]" if _present(low) and _present(high) else ""
    return f"{mean:+.1f}{interval}"


def eval_label(scoring: str, decoding: str) -> str:
    return f"generate ({decoding})" if scoring == "generate" else str(scoring)


def items_label(limit: int) -> str:
    return f"first {limit}" if limit else "all"


def task_display(family) -> dict:
    return {name: ts.display for name, ts in family.test_sets.items()}


ZERO_SHOT = "zero-shot reference"


def family_of_method(method: str) -> str:
    """The method's family label (LoRA variants, adapters, prompt-based, ...) from the registry."""
    if method == "-":
        return ZERO_SHOT
    return methods.family_label(method) or MISSING


def by_family(rows: list[dict]) -> list[dict]:
    """Rows grouped by family, then method (the registry's order), ours before published within a
    method: a method's published rows sit right under ours. The sort is stable, so the order inside
    each (method, source) group is kept."""
    return sorted(rows, key=lambda r: (method_rank(r["method"]), r["source"] != "ours"))


def avg_columns(family, any_overlap: bool) -> list[tuple[str, str]]:
    """(field, header) of the average columns: the paper's average and, when the paper averages a
    subset (arithmetic: 4 of 7), the all-sets average beside it."""
    sets = list(family.test_sets)
    if set(family.paper_average) >= set(sets):
        cols = [("avg_paper", "Avg")]
    else:
        cols = [("avg_paper", "Avg (paper)"), ("avg_all", f"Avg ({len(sets)} sets)")]
    if any_overlap:
        cols.append(("avg_excluding_overlap", "Avg (no overlap)"))
    return cols


# ---- accuracy --------------------------------------------------------------------------------

def fmt_interval(mean, low, high, marks: str = "") -> str:
    """45.0 [42.1, 47.9]"""
    return MISSING if not _present(mean) else f"{mean:.1f} [{low:.1f}, {high:.1f}]{marks}"


def fmt_vs(vs: dict | None) -> str:
    """+1.2 [-0.5, 2.9]*: the difference from the reference method, * when significant."""
    if not vs:
        return MISSING
    return f"{vs['diff']:+.1f} [{vs['low']:+.1f}, {vs['high']:+.1f}]" + ("*" if vs["significant"] else "")


def _set_cell(g: dict, s: str, marks: str) -> tuple[str, dict]:
    """A set's cell: the mean over seeds, ± the half-width of its 95% interval over items when the
    predictions are there (else ± the sd over seeds); cloze cells add acc_norm."""
    mean, std = g["acc"].get(s, (None, None))
    ci = (g.get("set_ci") or {}).get(s)
    data = {s: mean, f"{s}_std": std}
    if ci and _present(mean):
        data.update({f"{s}_low": ci["low"], f"{s}_high": ci["high"]})
        text = f"{mean:.1f} ±{(ci['high'] - ci['low']) / 2:.1f}"
    else:
        text = fmt_acc(mean, std)
    if s in g.get("acc_norm", {}):  # cloze: acc / acc_norm
        norm = g["acc_norm"][s][0]
        data[f"{s}_norm"] = norm
        text = text.replace(" ±", f" / {norm:.1f} ±") if ci else f"{text} / {fmt_acc(norm)}"
    return (text + marks if _present(mean) else MISSING), data


def _our_rows(family, groups: list[dict], avgs: list[tuple[str, str]]) -> list[dict]:
    rows = []
    paper = set(family.paper_average)
    for g in groups:
        cells, data = {}, {}
        for s in family.test_sets:
            marks = (DAGGER if s in g["overlap"] else "") + (APPROX if s in g["approximate"] else "")
            cells[s], more = _set_cell(g, s, marks)
            data.update(more)
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
        vs = g.get("vs_reference")
        cells["vs_reference"] = fmt_vs(vs)
        if vs:
            data.update({f"vs_{vs['reference']}": vs["diff"], f"vs_{vs['reference']}_low": vs["low"],
                         f"vs_{vs['reference']}_high": vs["high"], "p": vs["p"], "p_holm": vs["p_holm"],
                         "test": vs["test"]})
        seed_sd = g["avg_paper"][1]
        rows.append({"source": "ours", "model": g["model"], "method": g["method"],
                     "family": family_of_method(g["method"]), "train_set": g["train_set"],
                     "eval": eval_label(g["scoring"], g["decoding"]), "items": items_label(g["eval_limit"]),
                     "variant": g["variant"], "lr": f"{g['lr']:.2g}" if g.get("lr") else MISSING,
                     "seeds": f"n={g['n']}" + (f", sd {seed_sd:.1f}" if _present(seed_sd) else ""), "cells": cells,
                     "data": {"source": "ours", "model": g["model"], "method": g["method"],
                              "family": family_of_method(g["method"]), "train_set": g["train_set"], "scoring": g["scoring"], "decoding": g["decoding"],
                              "eval_limit": g["eval_limit"], "variant": g["variant"], "lr": g.get("lr"),
                              "n_seeds": g["n"], **data,
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
                     "seeds": "", "cells": {**cells, "vs_reference": MISSING},
                     "data": {"source": f"published: {src}", "model": model, "method": method,
                              "published_method": published_method, "family": family_of_method(method),
                              "train_set": train_set, "scoring": "generate", "decoding": "paper",
                              "eval_limit": 0, "variant": variant, "n_seeds": None, **data}})
    rows.sort(key=lambda r: (r["model"], method_rank(r["method"]), r["source"], r["variant"]))
    return rows


def accuracy_table(family, groups: list[dict], published: pd.DataFrame | None = None,
                   paper_train_set: str | None = None, scoring: str = "generate") -> Table:
    """The paper-style table of one task family and one scoring: ours (seed-aggregated), then the
    published rows, which are generated answers and so sit only beside generate-scored ones."""
    ours = [g for g in groups if g["task"] == family.name and g["scoring"] == scoring
            and g["acc"]]  # a run that read no test set (a learning-rate grid point) has no row here
    if scoring != "generate":
        published = None
    any_overlap = any(g["overlap"] for g in ours)
    avgs = avg_columns(family, any_overlap)
    rows = _our_rows(family, ours, avgs)
    if published is not None:
        rows += _published_rows(family, published, avgs, paper_train_set)
    rows = by_family(rows)
    approx_sets = {s for g in ours for s in g["approximate"]}
    headers = {s: d + (APPROX if s in approx_sets else "") for s, d in task_display(family).items()}
    headers.update(dict(avgs))
    reference = next((g["vs_reference"]["reference"] for g in ours if g.get("vs_reference")), None)
    if reference:
        headers["vs_reference"] = f"vs {reference} [95% CI]"

    limits = sorted({g["eval_limit"] for g in ours})
    optional = {"train_set": "train set", "eval": "eval", "items": "items/set", "variant": "variant"}
    ours_rows = [r for r in rows if r["source"] == "ours"]
    varies = {"train_set": len({r["train_set"] for r in rows}) > 1,  # ours vs the paper's set too
              "eval": len({r["eval"] for r in rows}) > 1,
              "items": len({r["items"] for r in ours_rows}) > 1,  # one limit for all: said in the title
              "variant": any(r["variant"] for r in rows)}
    shown = [c for c in optional if varies[c]]
    columns = ["source", "model", "method", "family"] + shown + ["lr", "seeds"]
    display = pd.DataFrame([{**{optional.get(c, c): r[c] for c in columns},
                             **{headers[k]: v for k, v in r["cells"].items() if k in headers}} for r in rows],
                           columns=[optional.get(c, c) for c in columns] + list(headers.values()))
    data = pd.DataFrame([r["data"] for r in rows])
    if "n_seeds" in data:
        data["n_seeds"] = data["n_seeds"].astype("Int64")  # published rows have none: blank, not 1.0

    title = f"{family.name.capitalize()} reasoning: accuracy (%), {SCORING_TITLE.get(scoring, scoring)}"
    if len(limits) == 1 and limits[0]:
        title += f", ours on the first {limits[0]} items per set"
    notes = accuracy_notes(family, ours, rows, limits)
    return Table(title, display, data, notes)


def accuracy_notes(family, ours: list[dict], rows: list[dict], limits: list[int]) -> list[str]:
    notes = []
    if any(g.get("set_ci") for g in ours):
        notes.append("Uncertainty: a set's cell is the mean over seeds ± the half-width of its 95% interval, "
                     "bootstrapped over the items (each item's correctness averaged over the seeds); Avg "
                     "[low, high] is the same interval for the average, resampling items within each set; "
                     "seeds: how many, and the sample sd of the average across them.")
    elif any(g["n"] > 1 for g in ours):
        notes.append("Runs that differ only by seed: mean ± sample standard deviation over n seeds.")
    if any(g.get("vs_reference") for g in ours):
        ref = next(g["vs_reference"] for g in ours if g.get("vs_reference"))
        notes.append(f"vs {ref['reference']}: the difference of the average from {ref['reference']}'s on the same "
                     f"items, with a 95% paired bootstrap interval; * marks a difference significant at 5% after "
                     f"Holm's correction over the methods of this table (exact McNemar test for single seeds, "
                     f"paired bootstrap over items otherwise).")
    if any(g.get("lr") for g in ours):
        notes.append("lr: the learning rate the runs used (a study's chosen rate, see its selection.json).")
    overlap_trains = sorted({g["train_set"] for g in ours if g["overlap"]})
    if overlap_trains:
        why = "; ".join(f"{t}: {family.train_sets[t].note}" if t in family.train_sets and family.train_sets[t].note
                        else t for t in overlap_trains)
        notes.append(f"{DAGGER} the test set overlaps the training data, so the value is not a held-out score "
                     f"(so are averages marked {DAGGER}; 'Avg (no overlap)' leaves those sets out). {why}.")
    approx = sorted({family.test_sets[s].display for g in ours for s in g["approximate"] if s in family.test_sets})
    if approx:
        notes.append(f"{APPROX} {', '.join(approx)}: the shipped approximate rebuild of the test file (the exact "
                     f"LLM-Adapters file was not reachable), so not exactly comparable with published values.")
    if any(l for l in limits):
        shown = ", ".join(f"first {l} items per set" if l else "every item" for l in limits)
        notes.append(f"Ours evaluated on a subset ({shown}): small-sample values, far noisier than the "
                     f"published full-set ones.")
    scorings = {g["scoring"] for g in ours}
    if "label" in scorings:
        notes.append("label: the answer option whose label word (answer1, true, ...) is most likely after the "
                     "LLM-Adapters prompt; it measures the answer format as much as knowledge, and is not "
                     "comparable with generated answers or with lm-eval's cloze scores.")
    if "cloze" in scorings:
        notes.append("cloze: each option's text scored as the continuation of the set's standard zero-shot "
                     "prompt, as lm-evaluation-harness does; cells are acc / acc_norm (acc_norm divides by the "
                     "option's length in characters; sets lm-eval scores by acc alone show acc). BoolQ has no "
                     "passage in LLM-Adapters' file, so its prompt lacks lm-eval's passage.")
    if any(r["source"].startswith("published") for r in rows):
        notes.append("Published rows are copied from the sources' READMEs (harness/data/published/), averages "
                     "as printed; their models, training sets, decoding and full test sets may differ from ours.")
        if any(r["method"] == "-" for r in rows):
            notes.append("Method '-': zero-shot reference (GPT-3.5 / ChatGPT), not fine-tuned.")
        renamed = sorted({(r["data"]["published_method"], r["method"]) for r in rows
                          if r["source"].startswith("published") and r["data"]["published_method"] != r["method"]})
        if renamed:
            notes.append("Published method names shown as ours: " + "; ".join(
                f"'{old}' = {new}" for old, new in renamed) + " (harness.methods aliases).")
    notes.append("Rows are grouped by method family (LoRA variants, adapters, prompt-based, multiplicative / "
                 "orthogonal, selective); a method's published rows follow ours.")
    return notes


# ---- efficiency ------------------------------------------------------------------------------

def efficiency_table(groups: list[dict]) -> Table:
    """Cost per (model, method, task, ...) and device: parameters, memory, throughput, forgetting."""
    multi = {c: len({(g[c] if c != "eval" else eval_label(g["scoring"], g["decoding"])) for g in groups}) > 1
             for c in ("train_set", "eval", "eval_limit")}
    disp, data = [], []
    for g in groups:
        m = lambda f: g[f][0]  # noqa: E731  (means; spreads over seeds are in the CSV)
        row = {"model": g["model"], "method": g["method"], "task": g["task"], "family": family_of_method(g["method"])}
        if multi["train_set"]:
            row["train set"] = g["train_set"]
        if multi["eval"]:
            row["eval"] = eval_label(g["scoring"], g["decoding"])
        if multi["eval_limit"]:
            row["items/set"] = items_label(g["eval_limit"])
        if any(x["variant"] for x in groups):
            row["variant"] = g["variant"]
        row.update({
            "seeds": f"n={g['n']}",
            "trainable params": fmt_count(m("trainable")),
            "trainable %": fmt_num(m("trainable_pct")),
            "peak train mem (GiB)": fmt_num(m("mem_train_gib")),
            "peak eval mem (GiB)": fmt_num(m("mem_eval_gib")),
            "memory measured as": g["mem_kind"] or MISSING,
            "train tokens/s": fmt_num(m("tokens_per_second")),
            "eval questions/s": fmt_num(m("eval_qps")),
            "forgetting (pts, 95% CI)": fmt_forgetting(m("forgetting_avg"), m("forgetting_low"), m("forgetting_high")),
            "parse failures (%)": fmt_num(100 * m("parse_failure_rate"), 2)
            if _present(m("parse_failure_rate")) else MISSING,
            "device": ", ".join(g["devices"]),
        })
        disp.append(row)
        data.append({k: g[k] for k in ("model", "method", "task", "train_set", "scoring", "decoding", "eval_limit",
                                        "variant", "n")} | {"family": family_of_method(g["method"])}
                    | {f: g[f][0] for f in ("trainable", "total_params", "trainable_pct", "mem_train_gib",
                                            "mem_eval_gib", "tokens_per_second", "eval_qps", "forgetting_avg",
                                            "forgetting_low", "forgetting_high",
                                            "parse_failure_rate")}
                    | {"tokens_per_second_std": g["tokens_per_second"][1], "mem_kind": g["mem_kind"],
                       "device": ";".join(g["devices"]), "run_ids": ";".join(g["run_ids"])})
    notes = ["Peak memory per phase: 'CUDA peak allocated' (torch.cuda.max_memory_allocated) on GPUs, "
             "'CPU peak RSS' (VmHWM) on CPU; the two are not comparable. The base model (method none) "
             "does not train: no train memory or throughput.",
             "Forgetting: points lost (before - after fine-tuning) on the retention suite, Biderman et al.'s: "
             "cloze-scored HellaSwag (acc_norm), ARC-Challenge (acc_norm) and WinoGrande (acc), lm-eval style, "
             "averaged over the sets; 95% paired bootstrap interval over the same items (mean over seeds); "
             "eval questions/s and parse failures: means over the test sets."]
    return Table("Efficiency", pd.DataFrame(disp), pd.DataFrame(data), notes)


# ---- failures --------------------------------------------------------------------------------

def first_line(text, limit: int = 200) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def failures_table(rows: list[dict], corrupt: list) -> Table:
    """Every run that did not finish ok, and every record file that could not be read."""
    bad = sorted((r for r in rows if r["status"] != "ok"), key=lambda r: str(r["run_id"]))
    display = pd.DataFrame([{"run id": r["run_id"], "model": r["model"] or MISSING, "method": r["method"] or MISSING,
                             "task": r["task"] or MISSING, "status": r["status"], "error": first_line(r["error"])}
                            for r in bad], columns=["run id", "model", "method", "task", "status", "error"])
    notes = [str(c) for c in corrupt]
    return Table("Failed runs", display, display.copy(), notes)

