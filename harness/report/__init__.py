"""Reports rebuilt from run records alone: paper-style accuracy tables (ours beside the published
values), an efficiency table, failed runs, and accuracy-vs-memory / accuracy-vs-parameters plots.

    python -m harness.report [--results results] [--out results/report] [--no-published] [--splice docs/results.md]

Modules: load (records, published CSV), aggregate (records -> rows -> seed groups; what a score and
an average mean per scoring; pure), significance (intervals, tests and power from the per-item
predictions, through harness.analysis.stats' two-level bootstrap), retention (forgetting pooled over seeds),
accuracy (the paper-style tables) and notes (their footnotes: method, power, wording), tables
(shared formatting, efficiency, failures; pure), tuning (a study's learning-rate grid), render
(Markdown / CSV / LaTeX, atomic writes), plots (PNG), build (the CLI).
"""
