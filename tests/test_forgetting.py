"""Forgetting is measured out of the run's domain: the retention suite never holds a test set of the
run's own task family nor a set whose training split the run trains on. Arithmetic runs keep
Biderman et al.'s cloze HellaSwag / ARC-Challenge / WinoGrande; commonsense runs are scored on the
cross-entropy of held-out math text (GSM8K's training solutions). The record keeps per-item values
before and after, and says the unit and the sign."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness import tasks
from harness.config import checks
from harness.config.overrides import resolve_one
from harness.errors import ConfigError
from harness.pipeline import forgetting, runner


def _suite(*overrides) -> list[str]:
    cfg = resolve_one(["model=tiny-random", "method=lora", *overrides])
    return [s.name for s in forgetting.suite(cfg.forgetting, cfg.task.name)]


def test_the_default_suite_is_out_of_each_familys_domain():
    assert _suite("task=arithmetic") == ["hellaswag", "arc_challenge", "winogrande"]
    assert _suite("task=commonsense") == ["gsm8k_train_solutions"]
    for family in (tasks.get_family(n) for n in ("arithmetic", "commonsense")):
        assert family.retention
        for name in family.retention:
            assert tasks.home_family(name).name != family.name
            split = name if name in tasks.all_test_sets() else tasks.all_texts()[name].train_split_of
            for train_set in family.train_sets.values():
                assert split not in train_set.train_splits, (family.name, name, train_set.name)


@pytest.mark.parametrize("task,name,why", [
    ("commonsense", "hellaswag", "in the domain of task=commonsense"),
    ("commonsense", "arc_challenge", "in the domain of task=commonsense"),
    ("arithmetic", "gsm8k_train_solutions", "in the domain of task=arithmetic"),
])
def test_an_in_domain_retention_set_is_refused_with_the_reason(task, name, why):
    with pytest.raises(ConfigError, match=why) as err:
        resolve_one(["model=tiny-random", "method=lora", f"task={task}", f"forgetting.test_sets=[{name}]"])
    assert "sign flipped" in str(err.value) and "forgetting.test_sets=[]" in str(err.value)


def test_a_set_whose_training_split_the_run_trains_on_is_refused():
    f = SimpleNamespace(test_sets=["arc_challenge"], limit=10)
    mixed = tasks.TrainSet("mixed", shipped=("train/gsm8k_train", "train/arc_challenge_train"),
                           train_splits=("gsm8k", "arc_challenge"))
    with pytest.raises(ConfigError, match="holds arc_challenge's training split"):
        checks.check_retention_suite(f, "arithmetic", mixed)
    checks.check_retention_suite(f, "arithmetic", tasks.get_family("arithmetic").train_set("math_offline"))


def test_a_users_training_file_holding_retention_items_is_refused(tmp_path):
    from harness import data
    docs, _ = data.shipped("train/gsm8k_train")
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(docs[3:5] + [{"instruction": "q", "input": "", "output": "a", "answer": "a"}]))
    with pytest.raises(ConfigError, match="holds 2 of the items of retention set 'gsm8k_train_solutions'"):
        resolve_one(["model=tiny-random", "method=lora", "task=commonsense", f"task.train_set={path}",
                 "forgetting.limit=10"])
    resolve_one(["model=tiny-random", "method=lora", "task=commonsense", f"task.train_set={path}",
             "forgetting.limit=3"])  # the first 3 documents are not in the file


def test_a_suite_mixing_accuracy_and_cross_entropy_is_refused():
    f = SimpleNamespace(test_sets=["hellaswag", "gsm8k_train_solutions"], limit=10)
    with pytest.raises(ConfigError, match="mixes test sets"):
        checks.check_retention_suite(f, None)


def test_a_commonsense_run_reads_no_test_set_for_forgetting():
    """The cross-entropy suite reads a training file, so it may run with eval.enabled=false."""
    resolve_one(["model=tiny-random", "method=lora", "task=commonsense", "eval.enabled=false"])
    with pytest.raises(ConfigError, match="keeps them unread"):
        resolve_one(["model=tiny-random", "method=lora", "task=arithmetic", "eval.enabled=false"])


def test_loss_forgetting_is_after_minus_before_document_by_document():
    before = {"gsm8k_train_solutions": {"measure": "loss", "metric": forgetting.LOSS_METRIC,
                                        "items": [1.0, 2.0, 3.0, 4.0], "tokens": [5, 6, 7, 8], "precision": "bf16"}}
    after = {"gsm8k_train_solutions": {**before["gsm8k_train_solutions"], "items": [1.5, 2.0, 3.5, 4.0]}}
    out = forgetting.summarise(before, after)
    s = out["sets"]["gsm8k_train_solutions"]
    assert s["item_loss_diffs"] == [0.5, 0.0, 0.5, 0.0] and s["forgetting"] == 0.25 > 0  # predicted worse: forgot
    assert s["items_before"] == [1.0, 2.0, 3.0, 4.0] and s["items_after"] == [1.5, 2.0, 3.5, 4.0]
    assert (s["before"], s["after"]) == (2.5, 2.75) and s["ci95"][0] < 0.25 < s["ci95"][1]
    assert out["measure"] == "loss" and out["forgetting_avg"] == 0.25 and "after - before" in out["unit"]
    assert "item_diffs" not in s  # accuracy-point differences are the cloze sets' key, not these


def test_a_commonsense_run_records_out_of_domain_forgetting_per_document(compose_run):
    """End to end: nothing trained, so every document's loss is the same before and after, bit for
    bit (each is scored alone, at the same precision), and the record says what was measured."""
    rec = runner.run(compose_run("method=none", "task=commonsense", "eval.scoring=cloze", "eval.precision=bf16"))
    assert rec.status == "ok", rec.error
    f = rec.forgetting
    assert set(f.sets) == {"gsm8k_train_solutions"} and f.measure == "loss"
    s = f.sets["gsm8k_train_solutions"]
    assert s["items"] == 4 and len(s["items_before"]) == len(s["items_after"]) == 4
    assert s["items_before"] == s["items_after"] and f.forgetting_avg == 0 and all(t > 0 for t in s["tokens"])
    assert s["precision"] == "bf16" and rec.eval_info.precision == "bf16"
    assert {m.precision for m in rec.eval.values()} == {"bf16"}
    assert not set(f.sets) & set(rec.eval)  # the retention suite is not the test table


def test_an_arithmetic_run_keeps_the_cloze_suite_and_its_cells_match_across_passes(compose_run):
    rec = runner.run(compose_run("method=none", "eval.precision=bf16"))
    assert rec.status == "ok", rec.error
    f = rec.forgetting
    assert set(f.sets) == {"hellaswag", "arc_challenge", "winogrande"} and f.measure is None
    assert f.forgetting_avg == 0 and all(s["before"] == s["after"] for s in f.sets.values())
    assert rec.eval_info.precision == "bf16"
