"""The report's statistics on fixture records with hand-made predictions: intervals over seeds and
items, differences from LoRA with p-values that never read 0, Wilson's interval for a constant
cell, the design's minimum detectable difference, and the cloze average's metrics and sets."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from harness.record.schema import Record
from harness.report import accuracy, aggregate, build
from test_report import row_of  # one helper for both report test modules

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "records"
LORA_ARITH = "tiny-random__lora__arithmetic__s42__eccb4e9155.json"
LORA_COMMON = "tiny-random__lora__commonsense__s42__c623657511.json"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def report(results: Path, capsys) -> tuple[int, Path]:
    out = results.parent / "report"
    code = build.main(["--results", str(results), "--out", str(out)])
    capsys.readouterr()
    return code, out


def test_the_cloze_average_uses_each_sets_standard_metric_and_leaves_boolq_out():
    # acc 50 everywhere (BoolQ 0), acc_norm 70 where lm-eval reports it: the average is lm-eval's
    # metric on the 7 sets whose prompts are lm-eval's, not acc on all 8 (that would be 43.75)
    rec = fixture(LORA_COMMON)
    for s, m in rec["eval"].items():
        m.update(scoring="cloze", accuracy=0.0 if s == "boolq" else 50.0,
                 accuracy_norm=70.0 if s in ("piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa") else None)
    rec["run_info"]["config"]["eval"]["scoring"] = "cloze"
    row = aggregate.flatten(Record.parse(rec))
    assert row["avg_paper"] == pytest.approx((5 * 70.0 + 2 * 50.0) / 7)
    assert row["score"]["piqa"] == 70.0 and row["score"]["siqa"] == 50.0 and row["score"]["boolq"] == 0.0
    table = accuracy.accuracy_table(aggregate.family_of("commonsense"), aggregate.aggregate([row]), scoring="cloze")
    shown = table.display.iloc[0]
    assert shown["PIQA (acc_norm)"] == "70.0" and shown["SIQA (acc)"] == "50.0" and shown["BoolQ (acc)"] == "0.0"
    assert shown["Avg (7 sets, no BoolQ)"] == "64.3≈"  # ≈: HellaSwag is the approximate file
    assert any("BoolQ is shown but left out of the average" in n for n in table.notes)
    assert table.data.iloc[0]["piqa_acc"] == 50.0 and table.data.iloc[0]["piqa_acc_norm"] == 70.0


def _with_predictions(results: Path, name: str, method: str, correct: list[int], seed: int = 42,
                      precision: str | None = None) -> None:
    """A copy of the fixture LoRA arithmetic record as `method` and `seed` (evaluated at `precision`),
    with predictions where every set has `correct` as its items' outcomes."""
    rec = fixture(name)
    rec["run_id"] = rec["run_id"].replace("__lora__", f"__{method}__").replace("__s42__", f"__s{seed}__")
    rec["run_id"] += f"_{precision}" if precision else ""
    rec["run_info"]["method"] = rec["run_info"]["config"]["method"]["name"] = method
    rec["run_info"]["seed"] = rec["run_info"]["config"]["seed"] = seed
    for s, m in rec["eval"].items():
        m.update(n=len(correct), correct=sum(correct), accuracy=100.0 * sum(correct) / len(correct))
        if precision:
            m["precision"] = precision
        rows = [{"index": i, "correct": bool(c)} for i, c in enumerate(correct)]
        path = results / "predictions" / rec["run_id"] / f"{s}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (results / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))


def test_two_seeds_that_disagree_widen_the_reported_intervals(tmp_path, capsys):
    # LoRA's seeds score 50% and 90% on the same items, BitFit's agree at 70%: averaging each item
    # over the seeds first (the old intervals) made LoRA look at least as certain as BitFit
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    _with_predictions(results, LORA_ARITH, "lora", [1] * 20 + [0] * 20, seed=1)
    _with_predictions(results, LORA_ARITH, "lora", [1] * 36 + [0] * 4, seed=2)
    for seed in (1, 2):
        _with_predictions(results, LORA_ARITH, "bitfit", [1] * 28 + [0] * 12, seed=seed)
    code, out = report(results, capsys)
    data = pd.read_csv(out / "accuracy_arithmetic.csv")
    lora, bitfit = row_of(data, method="lora", source="ours"), row_of(data, method="bitfit", source="ours")
    assert code == 0 and lora["avg_paper"] == bitfit["avg_paper"] == 70.0 and lora["n_seeds"] == 2
    assert lora["avg_paper_high"] - lora["avg_paper_low"] > 30  # seeds 40 points apart
    assert bitfit["avg_paper_high"] - bitfit["avg_paper_low"] < 15
    assert lora["gsm8k_high"] - lora["gsm8k_low"] > bitfit["gsm8k_high"] - bitfit["gsm8k_low"]
    assert bitfit["vs_lora_high"] - bitfit["vs_lora_low"] > 30 and bitfit["paired_on_seeds"]


def test_intervals_and_significance_come_from_the_predictions(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    _with_predictions(results, LORA_ARITH, "lora", [1] * 30 + [0] * 10)  # 75% on every set
    _with_predictions(results, LORA_ARITH, "bitfit", [1] * 10 + [0] * 30)  # 25%, on the same items
    _with_predictions(results, LORA_ARITH, "dora", [1] * 29 + [0] * 11)  # one item worse than LoRA
    _with_predictions(results, LORA_ARITH, "prompt_tuning", [0] * 40)  # 0 of 40: a constant cell
    code, out = report(results, capsys)
    assert code == 0
    data = pd.read_csv(out / "accuracy_arithmetic.csv")
    bitfit, dora = row_of(data, method="bitfit"), row_of(data, method="dora")
    assert bitfit["vs_lora"] == pytest.approx(-50.0) and bitfit["vs_lora_high"] < -40
    # no resample of 2000 comes near 0: p is below the resolution, stored as its bound 1/B (not 0); Holm
    # multiplies the smallest two (bitfit and prompt tuning, both at the bound) by 3 and 2: 3/B for both
    assert bitfit["p"] == 1 / 2000 and bitfit["p_is_upper_bound"] and bitfit["p_holm"] == 3 / 2000
    assert bitfit["test"].startswith("two-level bootstrap") and dora["p_holm"] > 0.05 and dora["vs_lora_low"] < 0
    assert bitfit["avg_paper_low"] < 25.0 < bitfit["avg_paper_high"]
    lo, hi = bitfit["gsm8k_low"], bitfit["gsm8k_high"]
    assert lo < 25.0 < hi and hi - lo > 15  # 40 items: an interval of about +-13 points
    md = (out / "accuracy_arithmetic.md").read_text()
    assert "-50.0 [" in md and "]*" in md and "vs lora [95% CI]" in md and "Holm" in md
    assert "< 0.0005 / < 0.0015" in md and "p = 0" not in md and "0.0 ±0.0" not in md
    prompt = row_of(data, method="prompt_tuning")
    assert prompt["gsm8k_interval"] == "wilson" and prompt["gsm8k_high"] == pytest.approx(8.76, abs=0.01)
    assert "0.0 [0.0, 8.8]" in md
    assert "n=1 (seed variance not measured)" in md
    assert "smallest difference this design could see at 80% power" in md


def test_a_row_is_compared_only_with_the_reference_at_its_own_evaluation_precision(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "runs").mkdir(parents=True)
    _with_predictions(results, LORA_ARITH, "lora", [1] * 20 + [0] * 20, precision="fp32")
    _with_predictions(results, LORA_ARITH, "bitfit", [1] * 30 + [0] * 10, precision="fp32")
    _with_predictions(results, LORA_ARITH, "bitfit", [1] * 30 + [0] * 10, precision="bf16")
    code, out = report(results, capsys)
    data = pd.read_csv(out / "accuracy_arithmetic.csv")
    ours = data[data["source"] == "ours"].set_index(["method", "eval_precision"])
    assert code == 0 and len(ours) == 3
    assert ours.loc[("bitfit", "fp32"), "vs_lora"] == pytest.approx(25.0)
    assert pd.isna(ours.loc[("bitfit", "bf16"), "vs_lora"])  # no LoRA evaluated in bf16 to pair with
