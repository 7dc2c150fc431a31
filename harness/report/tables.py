"""Tables from aggregated groups: formatting shared by every table, efficiency, failures (the
paper-style accuracy tables are report.accuracy's).

Each builder returns a `Table`: a display frame (formatted strings, for Markdown and LaTeX), a
data frame (plain numbers, for CSV), a title and footnotes. Builders are pure: no files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from harness import methods
from harness.report.aggregate import method_rank

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


def fmt_forgetting(ci: dict | None) -> str:
    """+2.1 [-0.8, +5.0]: points forgotten (before - after) with its 95% interval over seeds and
    items; ~ marks the approximation of records without per-item differences, ¹ one seed."""
    if not ci or not _present(ci.get("mean")):
        return MISSING
    marks = ("~" if ci["approximate"] else "") + ("" if ci["seed_variance"] else "¹")
    if ci.get("unit") == "nats":  # cross-entropy of held-out text, after - before
        return f"{ci['mean']:+.3f} [{ci['low']:+.3f}, {ci['high']:+.3f}] nats{marks}"
    return f"{ci['mean']:+.1f} [{ci['low']:+.1f}, {ci['high']:+.1f}]{marks}"


def eval_label(group: dict) -> str:
    """'generate (greedy, fp32)', 'cloze (bf16)': a row's (or group's) scoring, its decoding and the
    evaluation precision."""
    scoring, decoding, precision = group["scoring"], group["decoding"], group.get("eval_precision", "-")
    shown = [p for p in ((decoding if scoring == "generate" else None), precision) if p and p != "-"]
    return f"{scoring} ({', '.join(shown)})" if shown else str(scoring)


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


# ---- efficiency ------------------------------------------------------------------------------

def _forgetting_data(ci: dict | None) -> dict:
    ci = ci or {}
    return {"forgetting_avg": ci.get("mean"), "forgetting_low": ci.get("low"), "forgetting_high": ci.get("high"),
            "forgetting_interval": None if not ci else "approximate" if ci["approximate"] else "bootstrap",
            "forgetting_seed_variance": ci.get("seed_variance")}


def efficiency_table(groups: list[dict]) -> Table:
    """Cost per (model, method, task, ...) and device: parameters, memory, throughput, forgetting."""
    multi = {c: len({(g[c] if c != "eval" else eval_label(g)) for g in groups}) > 1
             for c in ("train_set", "eval", "eval_limit")}
    disp, data = [], []
    for g in groups:
        m = lambda f: g[f][0]  # noqa: E731  (means; spreads over seeds are in the CSV)
        row = {"model": g["model"], "method": g["method"], "task": g["task"], "family": family_of_method(g["method"])}
        if multi["train_set"]:
            row["train set"] = g["train_set"]
        if multi["eval"]:
            row["eval"] = eval_label(g)
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
            "forgetting (95% CI)": fmt_forgetting(g["forgetting_ci"]),
            "parse failures (%)": fmt_num(100 * m("parse_failure_rate"), 2)
            if _present(m("parse_failure_rate")) else MISSING,
            "device": ", ".join(g["devices"]),
        })
        disp.append(row)
        data.append({k: g[k] for k in ("model", "method", "task", "train_set", "scoring", "decoding",
                                        "eval_precision", "eval_limit", "variant", "n")} | {"family": family_of_method(g["method"])}
                    | {f: g[f][0] for f in ("trainable", "total_params", "trainable_pct", "mem_train_gib",
                                            "mem_eval_gib", "tokens_per_second", "eval_qps",
                                            "parse_failure_rate")}
                    | _forgetting_data(g["forgetting_ci"])
                    | {"tokens_per_second_std": g["tokens_per_second"][1], "mem_kind": g["mem_kind"],
                       "device": ";".join(g["devices"]), "run_ids": ";".join(g["run_ids"])})
    notes = ["Peak memory per phase: 'CUDA peak allocated' (torch.cuda.max_memory_allocated) on GPUs, "
             "'CPU peak RSS' (VmHWM) on CPU; the two are not comparable. The base model (method none) "
             "does not train: no train memory or throughput.",
             "Forgetting, measured out of the run's domain (harness.pipeline.forgetting): for arithmetic runs, points lost "
             "(before - after fine-tuning) on cloze-scored HellaSwag, ARC-Challenge and WinoGrande at their standard "
             "lm-eval metrics; for commonsense runs, 'nats': the rise in cross-entropy (after - before, nats per "
             "token) of held-out GSM8K reference solutions. Positive is forgotten in both. Averaged over the sets; "
             "95% interval from "
             "the report's two-level bootstrap over the seeds and the same items, paired before/after "
             "(harness.report.retention). ~: records without per-item differences (written before they were "
             "kept): a conservative normal approximation from each seed's interval and the spread between the "
             "seeds. ¹: one seed, seed variance not measured.",
             "Eval questions/s and parse failures: means over the test sets."]
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

