"""The notes under an accuracy table: how its numbers were computed, what its comparisons could
have seen, and how to read them. Pure: groups in, sentences out.

Wording rule (this is what `--splice` puts into docs/results.md): a difference whose interval
includes 0 is written "no difference larger than X points" (X the design's minimum detectable
difference at 80% power), never "indistinguishable" or "equivalent": 40 items and two seeds
cannot tell a 10-point difference from none.
"""
from __future__ import annotations

import statistics

from harness.report.aggregate import metric_of, not_averaged
from harness.report.tables import APPROX, DAGGER

NO_SEED_VARIANCE = "seed variance not measured"


def design_power(ours: list[dict]) -> dict | None:
    """The table's minimum detectable difference: the median (and range) over its comparisons."""
    vs = [g["vs_reference"] for g in ours if g.get("vs_reference")]
    if not vs:
        return None
    mdds = [v["mdd"] for v in vs]
    items = sorted({ci["items"] for g in ours for ci in (g.get("set_ci") or {}).values()})
    return {"mdd": statistics.median(mdds), "low": min(mdds), "high": max(mdds), "alpha": vs[0]["alpha"],
            "comparisons": vs[0]["comparisons"], "reference": vs[0]["reference"], "items": items,
            "seeds": sorted({g["n"] for g in ours if g.get("vs_reference") or g["method"] == vs[0]["reference"]}),
            "paired_seeds": all(v["paired_seeds"] for v in vs),
            "not_significant": [g["method"] for g in ours
                                if g.get("vs_reference") and not g["vs_reference"]["significant"]]}


def power_note(power: dict) -> str:
    """'smallest difference this design could see at 80% power: X points', with the design."""
    items = "/".join(str(n) for n in power["items"]) or "?"
    seeds = "/".join(str(n) for n in power["seeds"])
    spread = f"; {power['low']:.1f} to {power['high']:.1f} across them" if power["high"] > power["low"] else ""
    text = (f"Power: smallest difference this design could see at 80% power: {power['mdd']:.1f} points "
            f"(the median over the {power['comparisons']} comparisons with {power['reference']}{spread}). Design: "
            f"{items} items per set, {seeds} seed(s) per method, paired on items"
            f"{' and seeds' if power['paired_seeds'] else ''}, two-sided at 5%/{power['comparisons']} = "
            f"{100 * power['alpha']:.2g}% (Holm's worst case); MDD = (z(1 - alpha/2) + z(0.8)) x the "
            f"difference's bootstrap standard error, whose seed component is estimated from the data.")
    if power["not_significant"]:
        text += (f" Not significant ({', '.join(power['not_significant'])}): read as no difference larger than "
                 f"about {power['mdd']:.0f} points from {power['reference']} (one that large would have been seen "
                 f"4 times in 5); smaller ones could go unseen, so this is not evidence that they are equivalent.")
    return text


def uncertainty_notes(ours: list[dict]) -> list[str]:
    if not any(g.get("set_ci") for g in ours):
        return (["Runs that differ only by seed: mean ± sample standard deviation over n seeds."]
                if any(g["n"] > 1 for g in ours) else [])
    notes = ["Uncertainty (harness.analysis.stats.bootstrap): 95% intervals from a two-level bootstrap that resamples the "
             "seeds and the items (within each set), so both the spread between training seeds and the sampling "
             "of test items enter. A cell is the set's mean over seeds [its 95% interval]; for a set where every "
             "item scored the same on every seed (0 of 40, say) the interval is Wilson's score interval, since the "
             "bootstrap has nothing to resample there. Avg [low, high]: the average's interval; seeds: how many, "
             "and the sample sd of the average across them."]
    if any(g["n"] == 1 for g in ours):
        notes.append(f"n=1 ({NO_SEED_VARIANCE}): one seed, so the intervals of that row (and its comparisons) "
                     f"cover the items only; a second seed can move a result by more than they suggest.")
    if any(1 < g["n"] < 5 for g in ours):
        notes.append("With few seeds the seed component is estimated from n-1 degrees of freedom: where the "
                     "seeds disagree the intervals are approximate and too narrow rather than too wide "
                     "(simulated coverage of 73-91% for a nominal 95% at 2-5 seeds when seeds matter).")
    return notes


def comparison_notes(ours: list[dict]) -> list[str]:
    vs = next((g["vs_reference"] for g in ours if g.get("vs_reference")), None)
    if not vs:
        return []
    ref = vs["reference"]
    return [f"vs {ref}: the difference of the average from {ref}'s on the same items (paired on items, and on "
            f"seeds where both ran the same seed values), 95% interval from the same bootstrap. p: its two-sided "
            f"p-value (the centred bootstrap test, {vs['resamples']} resamples: '< {1 / vs['resamples']:.2g}' is "
            f"below its resolution), raw / Holm-corrected over the {vs['comparisons']} methods of this table; "
            f"* marks a Holm-corrected p below 0.05.", power_note(design_power(ours))]


def scoring_notes(family, scoring: str) -> list[str]:
    if scoring == "label":
        return ["label: the answer option whose label word (answer1, true, ...) is most likely after the "
                "LLM-Adapters prompt; it measures the answer format as much as knowledge, and is not "
                "comparable with generated answers or with lm-eval's cloze scores."]
    if scoring != "cloze":
        return []
    by_metric: dict = {}
    for s, ts in family.test_sets.items():
        by_metric.setdefault(metric_of(scoring, s), []).append(ts.display)
    metrics = "; ".join(f"{m}: {', '.join(names)}" for m, names in sorted(by_metric.items()))
    out = [f"cloze: each option's text scored as the continuation of the set's standard zero-shot prompt, as "
           f"lm-evaluation-harness does; each column is the set's standard lm-eval metric, named in its header "
           f"({metrics}; acc_norm divides each option's log-likelihood by its length in characters). The CSV "
           f"has both acc and acc_norm."]
    for s, why in not_averaged(scoring).items():
        if s in family.test_sets:
            out.append(f"{family.test_sets[s].display} is shown but left out of the average: {why}.")
    return out


def accuracy_notes(family, scoring: str, ours: list[dict], rows: list[dict], limits: list[int]) -> list[str]:
    notes = uncertainty_notes(ours) + comparison_notes(ours) + precision_notes(ours)
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
    if any(lim for lim in limits):
        shown = ", ".join(f"first {lim} items per set" if lim else "every item" for lim in limits)
        notes.append(f"Ours evaluated on a subset ({shown}): small-sample values, far noisier than the "
                     f"published full-set ones.")
    notes += scoring_notes(family, scoring)
    notes += published_notes(rows)
    notes.append("Rows are grouped by method family (LoRA variants, adapters, prompt-based, multiplicative / "
                 "orthogonal, selective); a method's published rows follow ours.")
    return notes


def precision_notes(ours: list[dict]) -> list[str]:
    """Which precision the rows were evaluated at (eval.precision as resolved, in each record): one for
    every row, or which differ; rows of different precisions are never pooled nor compared."""
    known = sorted({g["eval_precision"] for g in ours} - {"-"})
    unknown = any(g["eval_precision"] == "-" for g in ours)
    if not known:
        return ["Evaluation precision not recorded (records before eval.precision)."] if unknown else []
    if len(known) == 1 and not unknown:
        return [f"Evaluated at {known[0]}: every row's floating-point weights, adapters included, were set to "
                f"{known[0]} for its test sets (eval.precision), whatever the method trains or stores them in, so "
                f"rows differ by method, not by evaluation rounding."]
    shown = ", ".join(known + (["not recorded (records before eval.precision)"] if unknown else []))
    return [f"Rows were evaluated at different precisions ({shown}; the eval column says which): they are "
            f"kept apart, and a row is compared only with the reference evaluated at its own precision."]


def published_notes(rows: list[dict]) -> list[str]:
    if not any(r["source"].startswith("published") for r in rows):
        return []
    notes = ["Published rows are copied from the sources' READMEs (harness/data/published/), averages as "
             "printed; their models, training sets, decoding and full test sets may differ from ours."]
    if any(r["method"] == "-" for r in rows):
        notes.append("Method '-': zero-shot reference (GPT-3.5 / ChatGPT), not fine-tuned.")
    renamed = sorted({(r["data"]["published_method"], r["method"]) for r in rows
                      if r["source"].startswith("published") and r["data"]["published_method"] != r["method"]})
    if renamed:
        notes.append("Published method names shown as ours: " + "; ".join(
            f"'{old}' = {new}" for old, new in renamed) + " (harness.methods aliases).")
    return notes
