"""The one progress line of sweeps and studies (harness.ui.progress)."""
from __future__ import annotations

from harness.ui import progress as progress_module
from harness.ui.progress import RunProgress


def test_time_left_is_the_mean_of_runs_that_worked_times_the_runs_to_come(monkeypatch):
    clock = iter([0.0, 0.0, 1.0, 1.0, 101.0, 101.0, 401.0, 401.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    p = RunProgress(5)
    assert p.start() == "[....................] [1/5]"  # nothing measured yet: no time left shown
    p.finish(reused=True)  # a reused record took 1 s: it must not make the rest look fast
    assert p.start() == "[####................] [2/5]"
    assert p.finish() == 100.0
    line = p.start()  # runs 3, 4, 5 to come at 100 s each
    assert line.startswith("[########............] [3/5]") and line.endswith("~05:00 left")
    p.finish()  # 300 s: mean 200 s
    assert p.start().endswith("[4/5], ~06:40 left")  # runs 4 and 5


def test_a_sequence_that_grows_keeps_counting():
    p = RunProgress(1)
    p.start()
    p.finish()
    p.grow()
    assert "[2/2]" in p.start()
    unknown = RunProgress(None)
    assert unknown.start() == "[1/?]"
