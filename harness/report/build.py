"""`python -m harness.report`: rebuild every table and plot from the run records alone.

Exit status: 0 report written; 1 no records to report on; 2 bad arguments (argparse, or a
--splice file that does not exist). Everything is built in memory first and then written file
by file atomically, so a failure while building leaves the previous report untouched.

`--splice FILE` also replaces the text between FILE's <!-- report:start --> and <!-- report:end -->
markers with the report, image links relative to FILE: `--splice docs/results.md` makes the results
page. `--readme` is the option's former name, still accepted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from harness.analysis import selection
from harness.record import Stored, load_records, runs_dir
from harness.report import accuracy, aggregate, plots, render, significance, tables, tuning
from harness.report.load import load_published

PLOTS = ("acc_vs_vram.png", "acc_vs_params.png")


@dataclass
class Report:
    files: dict[str, str | bytes]
    n_records: int
    n_ok: int
    corrupt: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    efficiency: tables.Table | None = None
    failures: tables.Table | None = None
    tuning: tables.Table | None = None
    header: str = ""

    def markdown(self, header: str, image_prefix: str = "") -> str:
        accuracy = self.accuracy + ([self.tuning] if self.tuning is not None else [])
        return render.report_markdown(accuracy, self.efficiency, self.failures, self.corrupt, list(PLOTS),
                                      header, image_prefix)


def paper_train_set(family_name: str) -> str | None:
    """The paper's training set of a family, as the family declares it (None for one this checkout
    does not know: published rows then say 'paper')."""
    family = aggregate.family_of(family_name)
    return family.paper_train_set if family else None


def build(records: list[Stored], corrupt: list, published=None, source_label: str = "results/runs",
          predictions_dir: Path | None = None, reference: str = "lora",
          study_selection: dict | None = None) -> Report:
    """Every output file's content from the records (pure apart from reading task configs)."""
    split = {True: [], False: []}  # tuning runs hold validation numbers only: tabled apart
    for stored in records:
        split[selection.is_tuning(stored.record)].append(stored)
    tuning_records, records = [s.record for s in split[True]], split[False]
    rows, unreadable = aggregate.flatten_all(records)
    corrupt = list(corrupt) + unreadable
    groups = aggregate.aggregate(rows)
    if predictions_dir is not None:  # intervals and significance need the per-item predictions
        by_run = {(r["run_id"], r["scoring"]): r for r in rows}
        members = {id(g): [by_run[(rid, g["scoring"])] for rid in g["run_ids"]] for g in groups}
        significance.annotate(groups, members, predictions_dir, reference)
    # counted per record (a record scored two ways gives two rows)
    status = {r["run_id"]: r["status"] for r in rows} | {r.run_id: r.status for r in tuning_records}
    report = Report(files={}, n_records=len(status), n_ok=sum(s == "ok" for s in status.values()), corrupt=corrupt)
    report.tuning = tuning.selection_table(tuning_records, (study_selection or {}).get("selection"))
    if report.tuning is not None:
        report.files.update({"lr_selection.md": render.markdown(report.tuning),
                             "lr_selection.csv": render.csv_text(report.tuning),
                             "lr_selection.tex": render.latex(report.tuning)})
    for fam in aggregate.all_families():
        # one table per scoring (generate first: the published rows sit there)
        scorings = ["generate"] + sorted({g["scoring"] for g in groups if g["task"] == fam.name} - {"generate"})
        for scoring in scorings:
            t = accuracy.accuracy_table(fam, groups, published, paper_train_set(fam.name), scoring)
            report.accuracy.append(t)
            stem = f"accuracy_{fam.name}" + ("" if scoring == "generate" else f"_{scoring}")
            report.files.update({f"{stem}.md": render.markdown(t, empty="_no runs_"),
                                 f"{stem}.csv": render.csv_text(t), f"{stem}.tex": render.latex(t)})
    unknown = sorted({g["task"] for g in groups} - {f.name for f in aggregate.all_families()})
    if unknown:  # records of a task family this checkout does not declare: still costed below
        print(f"warning: no accuracy table for unknown task(s) {unknown}", file=sys.stderr)
    report.efficiency = tables.efficiency_table(aggregate.aggregate(rows, extra_key=("device",)))
    report.failures = tables.failures_table(rows, corrupt)
    report.files.update({"efficiency.md": render.markdown(report.efficiency, empty="_no ok runs_"),
                         "efficiency.csv": render.csv_text(report.efficiency),
                         "efficiency.tex": render.latex(report.efficiency),
                         "failures.md": render.markdown(report.failures, empty="_none: every run ok_")})
    report.files["acc_vs_vram.png"] = plots.accuracy_vs_memory(groups)
    report.files["acc_vs_params.png"] = plots.accuracy_vs_params(groups)
    header = (f"generated by `python -m harness.report` from {report.n_records} records ({report.n_ok} ok) "
              f"under {source_label}; rebuild it, do not edit it")
    report.header = header
    report.files["report.md"] = report.markdown(header)
    return report


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m harness.report", description=__doc__.split("\n")[0])
    p.add_argument("--results", default="results", help="results directory (records under <results>/runs)")
    p.add_argument("--out", default=None, help="output directory (default: <results>/report)")
    p.add_argument("--no-published", action="store_true", help="leave out the published rows")
    p.add_argument("--reference", default="lora", help="the method differences are tested against (default lora)")
    p.add_argument("--splice", "--readme", dest="splice", default=None, metavar="FILE",
                   help="also replace the text between <!-- report:start --> and <!-- report:end --> in this Markdown "
                        "file, e.g. --splice docs/results.md (--readme: the former name)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    out = Path(args.out) if args.out else results / "report"
    target = Path(args.splice) if args.splice else None
    if target is not None and not target.is_file():
        print(f"error: --splice {target}: no such file", file=sys.stderr)
        return 2
    directory = runs_dir(results)
    records, corrupt = load_records(directory) if directory else ([], [])
    for c in corrupt:
        print(c, file=sys.stderr)
    if not records:
        where = directory or results / "runs"
        what = "no readable records" if corrupt else "no records"
        print(f"{what} under {where}: run `make sweep` first", file=sys.stderr)
        return 1
    published = None
    if not args.no_published:
        try:
            published = load_published()
        except (OSError, ValueError) as exc:
            print(f"warning: published results not shown: {exc}", file=sys.stderr)
    chosen = directory.parent / "selection.json"  # a study's choice, with where each rate sits in its grid
    report = build(records, corrupt, published, source_label=str(directory),
                   predictions_dir=directory.parent / "predictions", reference=args.reference,
                   study_selection=json.loads(chosen.read_text()) if chosen.is_file() else None)
    for c in report.corrupt[len(corrupt):]:  # records that parsed but hold something else
        print(c, file=sys.stderr)
    if not report.n_records:
        print(f"no readable records under {directory}: run `make sweep` first", file=sys.stderr)
        return 1
    render.write_all(out, report.files)
    print(f"report: {report.n_records} records ({report.n_ok} ok, {report.n_records - report.n_ok} not ok, "
          f"{len(report.corrupt)} unreadable) -> {out}/")
    for name in sorted(report.files):
        print(f"  {out / name}")
    if target is not None:
        prefix = os.path.relpath(out.resolve(), target.resolve().parent).replace(os.sep, "/") + "/"
        spliced = render.splice_report(target.read_text(), report.markdown(report.header, prefix))
        if spliced is None:
            print(f"{target}: no {render.REPORT_START} ... {render.REPORT_END} markers: left unchanged "
                  f"(add them where the report should go)")
        else:
            render.atomic_write_text(target, spliced)
            print(f"{target}: report section replaced")
    return 0
