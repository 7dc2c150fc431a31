"""Reports rebuilt from fixture records (tests/fixtures/records): files, averages, seeds, failures,
corrupt files, published rows, LaTeX escaping, overlap marks, plots. No model is loaded."""
from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.record import Stored, load_records
from harness.record.schema import Record
from harness.report import aggregate, build, plots, render
from harness.report.load import load_published
from harness.report.plots import pareto_front
from harness.report.tables import Table

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "records"
LORA_ARITH = "tiny-random__lora__arithmetic__s42__eccb4e9155.json"
NONE_ARITH = "tiny-random__none__arithmetic__s42__7859f3c068.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
OUTPUTS = [f"{stem}.{ext}" for stem in ("accuracy_arithmetic", "accuracy_commonsense", "efficiency")
           for ext in ("md", "csv", "tex")] + ["failures.md", "report.md", "acc_vs_vram.png", "acc_vs_params.png"]


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def results(tmp_path) -> Path:
    """A results directory holding a copy of the fixture records under runs/."""
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    for p in FIXTURES.glob("*.json"):
        shutil.copy(p, runs / p.name)
    return tmp_path / "results"


def report(results: Path, capsys, *args) -> tuple[int, Path, str, str]:
    out = results.parent / "report"
    code = build.main(["--results", str(results), "--out", str(out), *args])
    captured = capsys.readouterr()
    return code, out, captured.out, captured.err


def row_of(df: pd.DataFrame, **match) -> pd.Series:
    sel = df
    for k, v in match.items():
        sel = sel[sel[k] == v]
    assert len(sel) == 1, f"{match}: {len(sel)} rows"
    return sel.iloc[0]


def built(results: Path, published=True):
    records, corrupt = load_records(results / "runs")
    return build.build(records, corrupt, load_published() if published else None)


def test_rebuild_writes_every_file(results, capsys):
    code, out, stdout, _ = report(results, capsys)
    assert code == 0
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert not list(out.glob(".*.tmp")), "temporary files left behind"
    text = (out / "report.md").read_text()
    for title in ("Arithmetic reasoning", "Commonsense reasoning", "Efficiency", "Failed runs", "acc_vs_vram.png"):
        assert title in text
    assert "8 records (6 ok, 2 not ok" in stdout


def test_paper_average_is_the_mean_of_gsm8k_aqua_mawps_svamp(results, capsys):
    code, out, _, _ = report(results, capsys)
    rec = fixture(LORA_ARITH)
    by_hand = (rec["eval"]["gsm8k"]["accuracy"] + rec["eval"]["aqua"]["accuracy"]
               + rec["eval"]["mawps"]["accuracy"] + rec["eval"]["svamp"]["accuracy"]) / 4
    all_seven = sum(v["accuracy"] for v in rec["eval"].values()) / 7
    data = pd.read_csv(out / "accuracy_arithmetic.csv")
    lora = row_of(data, source="ours", method="lora")
    assert lora["avg_paper"] == pytest.approx(by_hand) == pytest.approx(43.75)
    assert lora["avg_all"] == pytest.approx(all_seven)
    display = built(results).accuracy[0].display
    shown = row_of(display, source="ours", method="lora")
    assert shown["Avg (paper)"] == f"{by_hand:.1f}" and shown["Avg (7 sets)"] == f"{all_seven:.1f}"
    # the family's order and display names, from harness/tasks/arithmetic.py
    assert list(display.columns[-9:]) == ["GSM8K", "SVAMP", "MultiArith", "AddSub", "AQuA", "SingleEq", "MAWPS",
                                          "Avg (paper)", "Avg (7 sets)"]


def test_seeds_aggregate_to_mean_and_sample_std(results, capsys):
    seeds = [fixture(p.name) for p in sorted(FIXTURES.glob("*bitfit*"))]
    gsm = [r["eval"]["gsm8k"]["accuracy"] for r in seeds]
    paper = [statistics.fmean(r["eval"][s]["accuracy"] for s in ("gsm8k", "aqua", "mawps", "svamp")) for r in seeds]
    code, out, _, _ = report(results, capsys)
    data = row_of(pd.read_csv(out / "accuracy_arithmetic.csv"), source="ours", method="bitfit")
    assert data["n_seeds"] == 3
    assert data["gsm8k"] == pytest.approx(statistics.fmean(gsm)) and data["gsm8k_std"] == pytest.approx(
        statistics.stdev(gsm))
    assert data["avg_paper"] == pytest.approx(statistics.fmean(paper))
    assert data["avg_paper_std"] == pytest.approx(statistics.stdev(paper))
    shown = row_of(built(results).accuracy[0].display, source="ours", method="bitfit")
    assert shown["seeds"] == f"n=3, sd {statistics.stdev(paper):.1f}"  # the sd of the average across seeds
    assert shown["GSM8K"] == f"{statistics.fmean(gsm):.1f} ± {statistics.stdev(gsm):.1f}" == "50.0 ± 25.0"
    single = row_of(built(results).accuracy[0].display, source="ours", method="lora")
    assert single["seeds"] == "n=1 (seed variance not measured)" and "±" not in single["GSM8K"]


def test_runs_differing_in_more_than_the_seed_are_not_averaged():
    rows = [aggregate.flatten(Record.parse(fixture(p.name))) for p in sorted(FIXTURES.glob("*bitfit*"))]
    rows[0]["config"]["method.lr"] = "0.01"
    groups = aggregate.aggregate(rows)
    assert sorted(g["n"] for g in groups) == [1, 2]
    assert {g["variant"] for g in groups} == {"method.lr=0.01", "method.lr=0.001"}


def _evaluated_at(rec: dict, precision: str) -> dict:
    for metrics in rec.get("eval", {}).values():  # a failed run has none
        metrics["precision"] = precision
    return rec


def test_tables_say_the_evaluation_precision_and_never_pool_two(results):
    arithmetic = lambda: built(results, published=False).accuracy[0]  # noqa: E731
    assert "Evaluation precision not recorded (records before eval.precision)." in arithmetic().notes
    for path in (results / "runs").glob("*.json"):
        path.write_text(json.dumps(_evaluated_at(json.loads(path.read_text()), "fp32")))
    table = arithmetic()
    assert any(n.startswith("Evaluated at fp32: every row's floating-point weights") for n in table.notes)
    assert "eval" not in table.display  # one precision: said in the notes, no column
    # the same lora run evaluated in bf16 is another measurement: its own row, never a third seed
    rec = _evaluated_at(fixture(LORA_ARITH), "bf16")
    rec["run_id"] += "_bf16"
    (results / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    table = arithmetic()
    lora = table.display[table.display["method"] == "lora"]
    assert sorted(lora["eval"]) == ["generate (greedy, bf16)", "generate (greedy, fp32)"]
    assert list(lora["seeds"].str[:3]) == ["n=1", "n=1"]
    assert any(n.startswith("Rows were evaluated at different precisions (bf16, fp32;") for n in table.notes)
    assert not any(n.startswith("Evaluated at") for n in table.notes)


def test_seed_groups_keep_missing_keys_and_skip_missing_values():
    rows = [{"train_set": None, "seed": 1, "acc": {"gsm8k": 10.0}, "mem": None},
            {"train_set": None, "seed": 2, "acc": {"gsm8k": 30.0, "aqua": 5.0}, "mem": 2.0},
            {"train_set": "math_10k", "seed": 1, "acc": {}, "mem": 4.0}]
    (old, old_stats), (new, new_stats) = aggregate.by_group(rows, ("train_set",), ("mem",))
    assert [r["seed"] for r in old] == [1, 2] and old[0]["train_set"] is None  # None is a key, not dropped
    assert old_stats["acc"]["gsm8k"] == (20.0, pytest.approx(statistics.stdev([10.0, 30.0])))
    assert old_stats["acc"]["aqua"] == (5.0, None) and old_stats["mem"] == (2.0, None)  # one value: no std
    assert new_stats == {"mem": (4.0, None), "acc": {}, "acc_norm": {}, "score": {}}


def test_failed_and_oom_runs_are_listed(results, capsys):
    code, out, _, _ = report(results, capsys)
    text = (out / "failures.md").read_text()
    for name in FIXTURES.glob("*.json"):
        rec = fixture(name.name)
        if rec["status"] != "ok":
            assert rec["run_id"] in text and rec["status"] in text
            assert rec["error"].splitlines()[0] in text
    assert "| oom " in text and "| failed " in text
    assert "Failed runs" in (out / "report.md").read_text()


def test_corrupt_files_are_listed_and_do_not_crash(results, capsys):
    runs = results / "runs"
    (runs / "broken.json").write_text("{not json")
    (runs / "truncated.json").write_text((FIXTURES / LORA_ARITH).read_text()[:300])
    (runs / "a_list.json").write_text("[1, 2]")
    (runs / "no_status.json").write_text(json.dumps({"run_id": "x", "eval": {}}))
    code, out, _, stderr = report(results, capsys)
    assert code == 0
    for name, reason in (("broken.json", "not valid JSON"), ("truncated.json", "not valid JSON"),
                         ("a_list.json", "not a JSON object"), ("no_status.json", "no 'status'")):
        line = f"corrupt: {runs / name}: {reason}"
        assert line in stderr
        assert line in (out / "report.md").read_text() and line in (out / "failures.md").read_text()
    assert "6 ok" in (out / "report.md").read_text()


def test_no_records_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "runs").mkdir(parents=True)
    for results in (tmp_path / "missing", tmp_path / "empty"):
        code, out, _, stderr = report(results, capsys)
        assert code == 1
        assert "no records under" in stderr and "run `make sweep` first" in stderr
        assert not out.exists()


def test_published_rows_are_shown_and_marked(results, capsys):
    code, out, _, _ = report(results, capsys)
    common = (out / "accuracy_commonsense.md").read_text()
    assert "published: DoRA README" in common and "published: LLM-Adapters README" in common
    arith = pd.read_csv(out / "accuracy_arithmetic.csv")
    llama_lora = row_of(arith, source="published: LLM-Adapters README (AGI-Edgerunners/LLM-Adapters@8166572)",
                        model="LLaMA-7B", method="lora")
    assert llama_lora["gsm8k"] == pytest.approx(37.5) and llama_lora["avg_paper"] == pytest.approx(46.9)
    assert llama_lora["train_set"] == "math_10k"
    assert set(arith["source"]) >= {"ours"}
    code, out, _, _ = report(results, capsys, "--no-published")
    assert "published:" not in (out / "accuracy_commonsense.md").read_text()
    assert set(pd.read_csv(out / "accuracy_arithmetic.csv")["source"]) == {"ours"}


def test_label_scoring_gets_its_own_table_and_eval_subset_is_marked(results, capsys):
    tables_ = built(results).accuracy
    [t] = [t for t in tables_ if t.title.startswith("Commonsense") and "label-word" in t.title]
    assert "first 4 items per set" in t.title  # an older record's 'loglik' is the label scoring
    assert not [r for r in t.display["source"] if r.startswith("published")]  # published rows are generated
    assert row_of(t.display, source="ours")["HellaSwag≈"].endswith("≈")  # the fixture's HellaSwag is approximate


def test_different_eval_limits_stay_separate(results):
    rec = fixture(LORA_ARITH)
    rec["run_id"] += "_all"
    rec["run_info"]["config"]["eval"]["limit"] = 0
    (results / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    display = built(results, published=False).accuracy[0].display
    lora = display[display["method"] == "lora"]
    assert sorted(lora["items/set"]) == ["all", "first 4"]


def latex_parts(tex: str) -> tuple[str, list[str], str]:
    r"""(column format, the tabular's lines between \toprule and \bottomrule, what follows the
    tabular) of one rendered table, after checking the booktabs skeleton is whole and in order."""
    order = [r"\begin{table}[ht]", r"\centering", r"\caption{", r"\begin{tabular}{", r"\toprule", r"\midrule",
             r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    at = [tex.index(part) for part in order]
    assert at == sorted(at), tex
    assert all(tex.count(part) == 1 for part in order[3:]), tex
    column_format = tex.split(r"\begin{tabular}{", 1)[1].split("}", 1)[0]
    rows = tex.split("\\toprule\n", 1)[1].split("\\bottomrule", 1)[0].splitlines()
    return column_format, [r for r in rows if r != r"\midrule"], tex.split(r"\end{tabular}", 1)[1]


def cells(line: str) -> list[str]:
    r"""A tabular row split at its unescaped '&' (an escaped one, '\&', stays in its cell)."""
    assert line.endswith(r" \\"), line
    return [c.strip().replace("\0", r"\&") for c in line[:-3].replace(r"\&", "\0").split("&")]


def test_latex_tables_are_booktabs_with_escaped_text_and_notes(results, capsys):
    code, out, _, _ = report(results, capsys)
    t = built(results).accuracy[0]
    tex = (out / "accuracy_arithmetic.tex").read_text()
    column_format, rows, after = latex_parts(tex)
    assert len(column_format) == len(t.display.columns) and set(column_format) <= {"l", "r"}
    assert column_format[:3] == "lll" and column_format[-1] == "r"  # text left, accuracies right
    assert len(rows) == 1 + len(t.display)  # the header, then one line per row
    assert all(len(cells(r)) == len(t.display.columns) for r in rows)
    assert cells(rows[0])[-2:] == ["Avg (paper)", "Avg (7 sets)"]
    assert r"\caption{Arithmetic reasoning: accuracy (\%)" in tex
    assert r"math\_offline" in tex and r"adapter\_series" in tex and r"$\pm$" in tex
    body = tex.split("\n", 1)[1]  # the first line is a comment holding the raw title
    for raw in ("_", "%", "±", "†", "≈", "–"):
        assert raw not in body.replace("\\" + raw, ""), raw
    assert t.notes and after.count(r"\par") > len(t.notes)  # every note below the tabular
    assert "Runs that differ only by seed: mean $\\pm$ sample standard deviation" in after
    assert "harness/data/published/" in after
    column_format, rows, _ = latex_parts((out / "efficiency.tex").read_text())
    assert cells(rows[0])[:3] == ["model", "method", "task"] and r"trainable \%" in cells(rows[0])


def test_latex_escapes_every_special_character():
    table = Table("Cost_1 in $ & 5% #1", pd.DataFrame({"a_b": ["x_y & 5% #1 {z} ~ ^ \\"], "n": ["1.5 ± 0.2†"]}),
                  pd.DataFrame(), notes=["≈ approx_set: 50%"])
    tex = render.latex(table)
    column_format, rows, after = latex_parts(tex)
    assert column_format == "lr"
    assert cells(rows[0]) == [r"a\_b", "n"]
    text, number = cells(rows[1])
    assert text.startswith(r"x\_y \& 5\% \#1 \{z\} \textasciitilde") and text.endswith(r"\textbackslash")
    assert r"\textasciicircum" in text and number == r"1.5 $\pm$ 0.2$^\dagger$"
    assert r"\caption{Cost\_1 in \$ \& 5\% \#1}" in tex
    assert r"$\approx$ approx\_set: 50\%\par" in after
    empty = render.latex(Table("Nothing", pd.DataFrame(), pd.DataFrame()))
    assert latex_parts(empty)[:2] == ("l", ["none \\\\"])


def test_overlapping_sets_get_a_dagger(results, capsys):
    rec = fixture(LORA_ARITH)
    rec["run_id"] = rec["run_id"].replace("eccb4e9155", "math10k000")
    rec["run_info"]["train_set"] = rec["run_info"]["config"]["task"]["train_set"] = "math_10k"
    for s in ("addsub", "multiarith", "singleeq"):
        rec["eval"][s]["overlaps_training_data"] = True
    (results / "runs" / f"{rec['run_id']}.json").write_text(json.dumps(rec))
    t = built(results, published=False).accuracy[0]
    row = row_of(t.display, **{"train set": "math_10k"})
    assert row["AddSub"] == "50.0†" and row["MultiArith"] == "75.0†" and row["SingleEq"] == "100.0†"
    assert row["GSM8K"] == "25.0" and row["Avg (paper)"] == "43.8"  # the paper's 4 sets do not overlap
    assert row["Avg (7 sets)"].endswith("†")
    assert row["Avg (no overlap)"] == f"{(25 + 50 + 25 + 75) / 4:.1f}"
    data = row_of(t.data, train_set="math_10k")
    assert data["avg_excluding_overlap"] == pytest.approx((25 + 50 + 25 + 75) / 4)
    assert "avg_clean" not in t.data.columns
    assert any(n.startswith("† ") for n in t.notes)
    clean = row_of(t.display, **{"train set": "math_offline", "method": "lora"})
    assert "†" not in "".join(clean.astype(str))
    code, out, _, _ = report(results, capsys)
    assert "75.0†" in (out / "accuracy_arithmetic.md").read_text()


def test_plots_are_png_files(results, capsys):
    import matplotlib.image
    code, out, _, _ = report(results, capsys)
    for name in ("acc_vs_vram.png", "acc_vs_params.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert matplotlib.image.imread(out / name).shape[0] > 100


def test_pareto_front_keeps_points_no_other_beats():
    pts = [(1.0, 10.0), (2.0, 30.0), (2.5, 20.0), (3.0, 40.0), (0.5, 5.0), (3.0, 35.0)]
    assert pareto_front(pts) == [4, 0, 1, 3]


def as_label(rec: dict, accuracy: float, memory_gib: float) -> dict:
    """The record as if scored by label log-likelihood (no decoding), with `accuracy` on every set."""
    rec["run_id"] += "_label"
    rec["run_info"]["config"]["eval"]["scoring"] = "label"
    for v in rec["eval"].values():
        v.update(scoring="label", accuracy=accuracy)
        v.pop("decoding", None)
    rec["memory"]["eval"]["peak_rss_gib"] = memory_gib
    return rec


def test_protocols_in_one_family_do_not_share_a_pareto_front():
    recs = [fixture(p.name) for p in sorted(FIXTURES.glob("*__arithmetic__*.json"))]
    recs.append(as_label(fixture(NONE_ARITH), 90.0, 0.40))  # above and left of every generate-scored point
    groups = aggregate.aggregate(aggregate.flatten_all([Stored(Path(f"{r['run_id']}.json"), Record.parse(r)) for r in recs])[0])
    split = plots.series(groups)
    assert list(split) == ["arithmetic · generate", "arithmetic · label"]
    (loglik,) = split["arithmetic · label"]
    generate = split["arithmetic · generate"]
    assert loglik["scoring"] == "label" and [g["method"] for g in generate] == ["none", "lora", "bitfit"]
    # one front over the family (the old plot) would be the loglik point alone, hiding every generate-scored run
    points = [(plots.peak_memory(g), plots.accuracy_of(g)) for g in [loglik, *generate]]
    assert pareto_front(points) == [0]
    fronts = plots.fronts(groups)
    assert set(fronts) == set(split)
    assert fronts["arithmetic · label"] == [loglik]
    assert not any(g is loglik for g in fronts["arithmetic · generate"])
    assert [g["method"] for g in fronts["arithmetic · generate"]] == ["none", "bitfit", "lora"]
    for draw in (plots.accuracy_vs_memory, plots.accuracy_vs_params):
        assert draw(groups).startswith(PNG_MAGIC)


def test_series_names_only_what_differs_within_a_family():
    rows = [aggregate.flatten(Record.parse(fixture(p.name))) for p in sorted(FIXTURES.glob("*.json"))]
    # the families differ in scoring and training set, but each is measured one way: just its name
    assert list(plots.series(aggregate.aggregate(rows))) == ["arithmetic", "commonsense"]
    all_items, beam = fixture(LORA_ARITH), fixture(LORA_ARITH)
    all_items["run_id"] += "_all"
    all_items["run_info"]["config"]["eval"]["limit"] = 0
    beam["run_id"] += "_beam4"
    beam["run_info"]["config"]["eval"]["num_beams"] = 4
    for v in beam["eval"].values():
        v["decoding"] = "beam4"
    split = plots.series(aggregate.aggregate(rows + [aggregate.flatten(Record.parse(all_items)), aggregate.flatten(Record.parse(beam))]))
    assert list(split) == ["arithmetic · first 4 · beam4", "arithmetic · first 4 · greedy",
                           "arithmetic · all items · greedy", "commonsense"]
    assert [g["method"] for g in split["arithmetic · first 4 · beam4"]] == ["lora"]


def test_report_section_is_spliced_into_a_page(results, tmp_path, capsys):
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text("# Title\n\n<!-- report:start -->\nold\n<!-- report:end -->\n\nafter\n")
    code, out, stdout, _ = report(results, capsys, "--splice", str(page))
    text = page.read_text()
    assert code == 0 and "old" not in text and text.startswith("# Title") and text.endswith("after\n")
    assert "Arithmetic reasoning" in text and "](../report/acc_vs_vram.png)" in text  # relative to the page
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers\n")
    code, _, stdout, _ = report(results, capsys, "--splice", str(plain))
    assert code == 0 and plain.read_text() == "no markers\n" and "left unchanged" in stdout
    readme = tmp_path / "README.md"  # --readme: the option's former name, still accepted
    readme.write_text("<!-- report:start -->\n<!-- report:end -->\n")
    code, _, stdout, _ = report(results, capsys, "--readme", str(readme))
    assert code == 0 and "](report/acc_vs_vram.png)" in readme.read_text()
    code, _, _, _ = report(results, capsys, "--splice", str(tmp_path / "missing.md"))
    assert code == 2


def test_module_entry_point(results):
    done = subprocess.run([sys.executable, "-m", "harness.report", "--results", str(results), "--out",
                           str(results / "rep"), "--no-published"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert (results / "rep" / "report.md").exists()
