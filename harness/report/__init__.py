"""Reports rebuilt from run records alone: paper-style accuracy tables (ours beside the published
values), an efficiency table, failed runs, and accuracy-vs-memory / accuracy-vs-parameters plots.

    python -m harness.report [--results results] [--out results/report] [--no-published] [--readme README.md]

Modules: load (records, published CSV), aggregate (records -> rows -> seed groups; pure),
tables (display and data frames; pure), render (Markdown / CSV / LaTeX, atomic writes),
plots (PNG), build (the CLI).
"""
