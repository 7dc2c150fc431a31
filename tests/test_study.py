"""The comparison protocol: learning rates chosen on a validation split of the training set, never on
test data; the winner rerun with every seed on the test sets; selection and tags in the records.
The grid is extended while its winner sits at an end (up to study.lr_cap, only new points run), the
tuning horizon is at least half the final runs', and the selection states the validation set's size,
the criterion's standard error and whether the winner is within noise of the runner-up."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch

from harness import data, record, study, tasks
from harness.analysis import selection
from harness.errors import ConfigError
from harness.pipeline import heldout, runner
from harness.record.schema import Record

SMALL = ["study.methods=[bitfit]", "study.lr_grid=[0.5,2.0]", "study.seeds=[1,2]", "study.extend_grid=false"]


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
    assert len(seen) == 2 and all(r.status == "ok" and not r.eval and r.data.test == {} for r in seen)
    grid = selection["bitfit"]["grid"]
    assert [g["multiplier"] for g in grid] == [0.5, 2.0] and all(g["validation_loss"] for g in grid)
    best = min(grid, key=lambda g: g["validation_loss"])
    assert selection["bitfit"]["chosen_lr"] == best["lr"] == pytest.approx(best["multiplier"] * 1e-3)
    # a two-point grid's winner is at one of its ends, and the selection says which
    assert selection["bitfit"]["grid_edge"] == {0.5: "lowest", 2.0: "highest"}[best["multiplier"]]
    for rec in seen:  # the held-out records are the same for every grid point
        assert rec.data.validation == seen[0].data.validation and rec.data.validation_items == 16


@pytest.mark.slow
def test_the_winner_is_rerun_with_every_seed_on_the_test_sets(tmp_path, work_dirs):
    assert study.main(["study=tiny", *SMALL, f"study.results_dir={tmp_path}", f"cache_dir={work_dirs['cache']}"]) == 0
    sel = json.loads((tmp_path / "selection.json").read_text())
    chosen = sel["selection"]["bitfit"]["chosen_lr"]
    finals = [r for r in (record.read_record(p) for p in (tmp_path / "runs").glob("*.json"))
              if r.run_info.stage == "final"]
    assert sorted(r.run_info.seed for r in finals) == [1, 2]
    for rec in finals:
        cfg = rec.run_info.config
        assert cfg["method"]["lr"] == pytest.approx(chosen) and cfg["tags"]["study"] == "tiny"
        assert rec.status == "ok" and set(rec.eval) == set(tasks.get_family("commonsense").test_sets)
        assert "cloze" in rec.eval_also  # the study's second scoring of the same trained model
    assert [r["status"] for r in sel["final_runs"]] == ["ok", "ok"]

    # the report tables the grid apart, marks the rate the finals used, and costs only the finals
    from harness.report.build import main as report
    assert report(["--results", str(tmp_path), "--no-published"]) == 0
    # the selection states the validation set's size, the criterion's standard error and the noise verdict
    chosen_entry = sel["selection"]["bitfit"]
    val = chosen_entry["validation"]
    assert val["items"] == 16 and "label_tokens" in val and val["loss"] == min(
        g["validation_loss"] for g in chosen_entry["grid"])
    assert val["loss_se"] > 0 and val["se_from"] in (  # the second until harness.pipeline.runner records per-example losses
        "per-example validation losses", "approximate: training-step loss spread (no per-example validation losses)")
    assert chosen_entry["margin"] >= 0 and chosen_entry["margin_se"] > 0
    assert chosen_entry["within_noise"] is (chosen_entry["margin"] < 2 * chosen_entry["margin_se"])
    assert chosen_entry["position"] == "grid edge" and chosen_entry["at_cap"] is False  # extension off here
    assert chosen_entry["horizon"] == {"tune_steps": 4, "final_steps": 6, "ratio": 0.6667, "min_ratio": 0.5}
    assert set(sel["protocol"]) == {"rule", "grid_extension", "tuning_horizon", "noise"}

    grid = pd.read_csv(tmp_path / "report" / "lr_selection.csv")
    assert list(grid["method"]) == ["bitfit"] and float(grid["chosen lr"][0]) == pytest.approx(chosen, rel=0.05)
    assert grid["grid: lr: validation loss (accuracy)"][0].count("✓") == 1
    assert float(grid["loss SE"][0]) == pytest.approx(val["loss_se"], abs=5e-4)
    report_text = (tmp_path / "report" / "report.md").read_text()
    assert "Tuning horizon: 4 optimizer steps per tuning run, 0.67x the final runs' 6." in report_text
    assert "Validation size: 16 records; loss SE:" in report_text
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


# ---- the grid extension: real tiny runs whose validation loss the test sets --------------------------

def steered(monkeypatch, tmp_path, loss_at, *overrides):
    """A study of bitfit on tiny-random whose runs train for real but report loss_at(multiplier) as
    their validation loss (so the test decides the winner); returns (study, run, multipliers trained)."""
    s = small_study(tmp_path, "study.extend_grid=true", *overrides)
    recipe = study.recipe_lr(s, "bitfit")
    current, trained = {}, []
    monkeypatch.setattr(heldout, "loss", lambda *args, **kwargs: loss_at(current["mult"]))

    def run(cfg):
        current["mult"] = round(cfg.method.lr / recipe, 6)
        rec, reused = runner.run_or_reuse(cfg)
        if not reused:  # a complete record of this code is reused, not trained again
            trained.append(current["mult"])
        return rec
    return s, run, trained


@pytest.mark.slow
def test_a_winner_at_the_top_of_the_grid_extends_it_upward_running_only_the_new_points(tmp_path, monkeypatch,
                                                                                      work_dirs):
    cache = [f"cache_dir={work_dirs['cache']}"]
    falling = lambda m: 5.0 - math.log2(m)  # noqa: E731 (the higher the rate, the lower the loss)
    s, run, trained = steered(monkeypatch, tmp_path, falling, "study.lr_grid=[0.5,1.0,2.0]", "study.lr_cap=[0.0625,4]")
    first = study.tune(s, cache, run)["bitfit"]
    assert trained == [0.5, 1.0, 2.0, 4.0]  # the grid's factor is 2: one point above its top, the cap
    assert [g["multiplier"] for g in first["grid"]] == [0.5, 1.0, 2.0, 4.0] and first["chosen_multiplier"] == 4.0
    assert first["extension"] == {"enabled": True, "factor": 2.0, "cap": [0.0625, 4.0], "added": [4.0]}

    # the same study with a higher cap: the grid goes on upward, and only the new point trains
    s, run, trained = steered(monkeypatch, tmp_path, falling, "study.lr_grid=[0.5,1.0,2.0]", "study.lr_cap=[0.0625,8]")
    second = study.tune(s, cache, run)["bitfit"]
    assert trained == [8.0]
    assert second["extension"]["added"] == [4.0, 8.0] and second["chosen_multiplier"] == 8.0
    assert second["chosen_lr"] == pytest.approx(8 * study.recipe_lr(s, "bitfit"))


def test_a_winner_at_the_cap_is_flagged(tmp_path, monkeypatch, work_dirs):
    rising = lambda m: 5.0 + math.log2(m)  # noqa: E731 (the lowest rate wins)
    s, run, trained = steered(monkeypatch, tmp_path, rising, "study.lr_grid=[0.5,1.0]", "study.lr_cap=[0.5,16]")
    chosen = study.tune(s, [f"cache_dir={work_dirs['cache']}"], run)["bitfit"]
    assert trained == [0.5, 1.0]  # x0.25 would leave the cap: not run
    assert chosen["chosen_multiplier"] == 0.5 and chosen["grid_edge"] == "lowest"
    assert chosen["position"] == "at the cap" and chosen["at_cap"] is True
    assert selection.note(chosen) == "at the cap (lowest rate)"


def test_an_interior_winner_stops_the_extension(tmp_path, monkeypatch, work_dirs):
    valley = lambda m: 5.0 + abs(math.log2(m) - 1)  # noqa: E731 (x2 is the best rate)
    s, run, trained = steered(monkeypatch, tmp_path, valley, "study.lr_grid=[0.5,1.0]", "study.lr_cap=[0.0625,16]")
    chosen = study.tune(s, [f"cache_dir={work_dirs['cache']}"], run)["bitfit"]
    assert trained == [0.5, 1.0, 2.0, 4.0]  # x2 won at the top, x4 lost to it: x2 is interior, nothing more runs
    assert chosen["chosen_multiplier"] == 2.0 and chosen["position"] == "interior" and chosen["at_cap"] is False
    assert chosen["grid_edge"] is None and chosen["extension"]["added"] == [2.0, 4.0]
    assert selection.note(chosen) == "interior"


@pytest.mark.parametrize("multipliers, best, expected", [
    ([0.5, 1, 2], 2, 4.0), ([0.5, 1, 2], 0.5, 0.25), ([0.5, 1, 2], 1, None),
    ([1, 2, 4, 8, 16], 16, None), ([0.0625, 0.125], 0.0625, None), ([1, 3, 9], 9, None),
])
def test_the_next_grid_point_is_one_factor_beyond_the_winning_end_within_the_cap(multipliers, best, expected):
    factor = selection.grid_factor(multipliers)
    assert selection.next_multiplier(multipliers, best, factor, [0.0625, 16]) == expected
    at_end = best in (min(multipliers), max(multipliers))
    assert selection.position(multipliers, best, factor, [0.0625, 16]) == (
        "interior" if not at_end else "at the cap" if expected is None else "grid edge")


@pytest.mark.parametrize("extra, message", [
    (["study.lr_grid=[0.5,1.0,4.0]"], "no single factor"),
    (["study.lr_grid=[1.0]"], "at least two distinct rates"),
    (["study.lr_grid=[0.5,32.0]", "study.extend_grid=false"], "outside study.lr_cap"),
    (["study.lr_cap=[2,16]"], "min <= 1 <= max"),
])
def test_grids_that_cannot_be_extended_are_refused(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        small_study(tmp_path, "study.extend_grid=true", *extra)


# ---- the tuning horizon ------------------------------------------------------------------------------

def fake_run(cfg):
    """A tuning record without a model: validation loss lowest at the recipe's rate."""
    return Record.parse({"status": "ok", "run_id": f"r{cfg.method.lr}",
                         "run_info": {"config": {"method": {"lr": cfg.method.lr}}},
                         "train_info": {"validation_loss": [{"step": 2, "loss": 1 + abs(math.log2(cfg.method.lr / 1e-3))}]}})


def test_a_tuning_horizon_shorter_than_half_the_final_runs_is_refused(tmp_path):
    short = "study.tune=[train.max_steps=2,eval.enabled=false,forgetting.enabled=false]"  # final runs: 6 steps
    s = small_study(tmp_path, short)
    with pytest.raises(ConfigError, match=r"train 2 optimizer steps, below half the final runs' 6.*max_steps >= 3"):
        study.tune(s, [], lambda cfg: pytest.fail("a run started before the horizon was checked"))
    # allowed with a stated reason, which the selection records
    allowed = small_study(tmp_path, short, "study.short_horizon_reason=a smoke test of the protocol")
    chosen = study.tune(allowed, [], fake_run)["bitfit"]
    assert chosen["horizon"] == {"tune_steps": 2, "final_steps": 6, "ratio": 0.3333, "min_ratio": 0.5,
                                 "short_horizon_reason": "a smoke test of the protocol"}


def test_an_epoch_based_final_run_counts_its_optimizer_steps(tmp_path):
    s = small_study(tmp_path, "study.final=[train.epochs=2]")  # tiny's training set, 16 held out, batch 4
    with pytest.raises(ConfigError, match=r"below half the final runs' \d+"):
        study.check(s, [])
    cfg = study.run_config(s, "bitfit", 1e-3, "final", 1, [])
    n = len(tasks.load_train_set(tasks.get_family("commonsense").train_set(cfg.task.train_set), cfg.cache_dir)[0])
    assert study.optimizer_steps(cfg) == math.ceil(2 * (n - 16) / 4)


# ---- the size of the validation set and the noise of the criterion -----------------------------------

def test_the_validation_loss_gives_its_per_example_losses_and_standard_error(tiny):
    import copy

    from harness.pipeline.train import tokenize_examples
    model, tok = copy.deepcopy(tiny[0]), tiny[1]
    torch.manual_seed(0)  # the random model's outputs are near uniform: every example would lose the same
    torch.nn.init.normal_(model.get_output_embeddings().weight, std=1.0)
    records = [{"instruction": f"What is {i} plus {i + 3}?", "input": "", "output": f"The answer is {2 * i + 3}" + "!" * i}
               for i in range(7)]
    examples = tokenize_examples(records, tok, 256, False, "clean")
    cpu = torch.device("cpu")
    detail = {"stale": 1}
    mean = heldout.loss(model, tok, examples, 3, cpu, torch.float32, detail=detail)
    assert mean == heldout.loss(model, tok, examples, 3, cpu, torch.float32)  # the value is unchanged
    losses, tokens = detail["example_loss"], detail["example_tokens"]
    assert "stale" not in detail and detail["items"] == len(losses) == 7 and detail["label_tokens"] == sum(tokens) > 7
    assert sum(x * n for x, n in zip(losses, tokens)) / sum(tokens) == pytest.approx(mean, abs=1e-4)
    assert detail["loss_se"] == pytest.approx(selection.ratio_se(losses, tokens), abs=1e-5) and detail["loss_se"] > 0
    alone = {}  # an example's loss does not depend on the batch it is in
    heldout.loss(model, tok, examples, 1, cpu, torch.float32, detail=alone)
    assert alone["example_loss"] == pytest.approx(losses, abs=1e-4)


def tuning_record(lr: float, losses: list[float], tokens: list[int], status: str = "ok", detail: bool = True):
    mean = sum(x * n for x, n in zip(losses, tokens)) / sum(tokens)
    return Record.parse({"status": status, "run_id": f"r{lr}", "data": {"validation": {"items": len(losses)}},
            "run_info": {"config": {"method": {"lr": lr}, "train": {"batch_size": 4}}},
            "train_info": {"validation_loss": [{"step": 10, "loss": round(mean, 5)}], "losses": [2.0] * 10},
            "validation_final": {"items": len(losses), "label_tokens": sum(tokens), "example_loss": losses,
                                 "example_tokens": tokens} if detail else None})


def test_the_margin_over_the_runner_up_is_judged_against_its_standard_error():
    tokens = [10, 12, 8, 11, 9, 10, 14, 6]
    spread = [0.5, 2.5, 1.0, 3.0, 0.2, 1.8, 2.2, 0.8]  # examples differ a lot from each other
    best = tuning_record(2e-3, [x - 0.05 for x in spread], tokens)  # but the better rate is better on every one
    worse = tuning_record(1e-3, spread, tokens)
    grid = [selection.grid_point(r) for r in (worse, best)]
    winner, second = selection.choose(grid), selection.runner_up(grid)
    assert winner["lr"] == 2e-3 and second["lr"] == 1e-3
    assert winner["validation_items"] == 8 and winner["validation_tokens"] == 80
    se = selection.ratio_se(best.validation_final.example_loss, tokens)
    assert winner["validation_se"] == pytest.approx(se, abs=1e-5) and se > 0.2
    paired = selection.noise(winner, second, best, worse)
    assert paired["margin"] == pytest.approx(0.05, abs=1e-4) and paired["margin_se"] < 1e-4
    assert paired["within_noise"] is False and paired["margin_se_from"] == "paired over the same validation examples"
    # without per-example losses the errors add as if independent: the same margin is within noise
    unpaired = selection.noise(winner, second)
    assert unpaired["within_noise"] is True and unpaired["margin_se"] > 0.3
    # a margin made of a few examples' luck is within noise even when paired
    lucky = tuning_record(2e-3, [x - (0.4 if i == 0 else 0.0) for i, x in enumerate(spread)], tokens)
    point = selection.grid_point(lucky)
    assert selection.noise(point, second, lucky, worse)["within_noise"] is True
    assert selection.note({"position": "interior", "within_noise": True}) == "interior, within noise (margin < 2 SE)"


def test_without_per_example_losses_the_standard_error_comes_from_the_training_loss_spread():
    rec = tuning_record(1e-3, [1.0, 2.0], [5, 5], detail=False)
    rec.train_info.losses = [1.0, 1.2, 0.8, 1.0, 1.2, 0.8, 1.0, 1.2, 0.8, 1.0]
    se, how = selection.loss_se(rec)
    sd = math.sqrt(sum((x - 1.0) ** 2 for x in rec.train_info.losses) / 9)
    assert se == pytest.approx(sd * math.sqrt(4 / 2), abs=1e-5) and how.startswith("approximate")


def test_a_tuning_run_is_known_by_its_stage_in_new_and_older_records():
    def rec(**config):
        return Record.parse({"status": "ok", "run_info": {"config": config}})
    assert selection.is_tuning(rec(stage="tune")) and not selection.is_tuning(rec(stage="final"))
    assert selection.is_tuning(rec(tags={"stage": "tune"}))  # records made before stage was a key
    assert not selection.is_tuning(rec(stage="run", tags={}))
