"""The comparison protocol: learning rates chosen on a validation split of the training set, never on
test data; the winner rerun with every seed on the test sets; selection and tags in the records."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness import data, runner, study, tasks
from harness.errors import ConfigError

SMALL = ["study.methods=[bitfit]", "study.lr_grid=[0.5,2.0]", "study.seeds=[1,2]"]


def small_study(tmp_path, *extra):
    return study.load("tiny", [*SMALL, f"study.results_dir={tmp_path}", *extra])


def test_tuning_never_reads_test_data(tmp_path, monkeypatch, work_dirs):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"a test set was read while tuning: {args}")

    real_shipped = data.shipped
    monkeypatch.setattr(tasks, "load_test_set", forbidden)
    monkeypatch.setattr(data, "shipped", lambda name: forbidden(name) if name.startswith("test/") else real_shipped(name))
    s = small_study(tmp_path)
    seen = []

    def run(cfg):
        assert not cfg.eval.enabled and not cfg.forgetting.enabled
        rec = runner.run(cfg)
        seen.append(rec)
        return rec

    selection = study.tune(s, [f"cache_dir={work_dirs['cache']}"], run)
    assert len(seen) == 2 and all(r["status"] == "ok" and "eval" not in r and r["data"]["test"] == {} for r in seen)
    grid = selection["bitfit"]["grid"]
    assert [g["multiplier"] for g in grid] == [0.5, 2.0] and all(g["validation_loss"] for g in grid)
    best = min(grid, key=lambda g: g["validation_loss"])
    assert selection["bitfit"]["chosen_lr"] == best["lr"] == pytest.approx(best["multiplier"] * 1e-3)
    # a two-point grid's winner is at one of its ends, and the selection says which
    assert selection["bitfit"]["grid_edge"] == {0.5: "lowest", 2.0: "highest"}[best["multiplier"]]
    for rec in seen:  # the held-out records are the same for every grid point
        assert rec["data"]["validation"] == seen[0]["data"]["validation"] and rec["data"]["validation"]["items"] == 16


def test_the_winner_is_rerun_with_every_seed_on_the_test_sets(tmp_path, work_dirs):
    assert study.main(["study=tiny", *SMALL, f"study.results_dir={tmp_path}", f"cache_dir={work_dirs['cache']}"]) == 0
    sel = json.loads((tmp_path / "selection.json").read_text())
    chosen = sel["selection"]["bitfit"]["chosen_lr"]
    finals = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")
              if json.loads(p.read_text())["run_info"]["config"]["tags"].get("stage") == "final"]
    assert sorted(r["run_info"]["seed"] for r in finals) == [1, 2]
    for rec in finals:
        cfg = rec["run_info"]["config"]
        assert cfg["method"]["lr"] == pytest.approx(chosen) and cfg["tags"]["study"] == "tiny"
        assert rec["status"] == "ok" and set(rec["eval"]) == set(tasks.get_family("commonsense").test_sets)
        assert "cloze" in rec["eval_also"]  # the study's second scoring of the same trained model
    assert [r["status"] for r in sel["final_runs"]] == ["ok", "ok"]

    # the report tables the grid apart, marks the rate the finals used, and costs only the finals
    from harness.report.build import main as report
    assert report(["--results", str(tmp_path), "--no-published"]) == 0
    grid = pd.read_csv(tmp_path / "report" / "lr_selection.csv")
    assert list(grid["method"]) == ["bitfit"] and float(grid["chosen lr"][0]) == pytest.approx(chosen, rel=0.05)
    assert grid["grid: lr: validation loss (accuracy)"][0].count("✓") == 1
    costs = pd.read_csv(tmp_path / "report" / "efficiency.csv")
    assert len(costs) == 2 and set(costs["n"]) == {2}  # generate and cloze of the two finals, no tuning row


@pytest.mark.parametrize("extra, message", [
    (["study.methods=[none]"], "not methods that train"),
    (["study.lr_grid=[0,1]"], "positive multipliers"),
    (["study.nope=1"], "nope"),
])
def test_bad_studies_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        small_study(tmp_path, *extra)


def test_a_tuning_stage_that_would_read_test_sets_is_refused(tmp_path):
    s = small_study(tmp_path, "study.tune=[train.max_steps=2]")  # eval left enabled
    with pytest.raises(ConfigError, match="must not read test sets"):
        study.tune(s, [], runner.run)
