"""Config layouts over time (harness.config.versions): an old record reads in the current layout, a
run that computes what an old layout's run computed keeps its id, a new setting gets a new id, and a
command line written for the old layout is told the new name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import record
from harness.config import versions
from harness.errors import ConfigError
from harness.record.schema import Record

ROOT = Path(__file__).resolve().parents[1]
OLD = {"model": {"name": "m"}, "method": {"name": "lora"}, "task": {"name": "arithmetic"}, "seed": 1,
       "train": {"epochs": 1.0, "val_size": 128, "eval_every": 10, "val_accuracy_items": 32},
       "eval": {"batch_size": 32}}


def committed_records():
    for path in sorted(ROOT.glob("results/**/runs/*.json")):
        rec = Record.parse(json.loads(path.read_text()))
        if rec.run_info.config.get("model"):
            yield path, rec


def test_every_committed_record_keeps_its_run_id_in_the_current_layout():
    """The records were written in layout 1; read in the current one, their configs hash to the
    ids they were filed under (a study resumes and a baseline is reused across the change)."""
    checked = 0
    for path, rec in committed_records():
        assert rec.schema_ == versions.LAYOUT and "val_size" not in rec.run_info.config["train"], path
        assert rec.run_id in {record.run_id(rec.run_info.config, device) for device in ("cpu", "cuda")}, path
        checked += 1
    assert checked >= 100


def test_an_old_config_is_upgraded_with_neutral_values_for_the_added_keys():
    new = versions.upgrade(OLD, 1)
    assert new["validation"] == {"size": 128, "every": 10, "accuracy_items": 32, "batch_size": 32, "keep_best": False}
    assert new["train"] == {"epochs": 1.0} and OLD["train"]["val_size"] == 128  # the input is left alone
    assert versions.id_layout(new) == OLD


@pytest.mark.parametrize("change", [{"keep_best": True}, {"batch_size": 8}])
def test_a_setting_the_old_layout_could_not_express_gets_an_id_of_its_own(change):
    new = versions.upgrade(OLD, 1)
    changed = {**new, "validation": {**new["validation"], **change}}
    assert record.run_id(changed) != record.run_id(new) == record.run_id(OLD)
    assert versions.id_layout(changed)["_layout"] == versions.LAYOUT


def test_a_record_written_in_the_old_layout_reads_in_the_new_one():
    rec = Record.parse({"status": "ok", "run_info": {"config": OLD}})
    assert rec.run_info.setting("validation.size") == 128 and rec.run_info.setting("train.val_size") is None
    assert rec.to_json()["schema"] == versions.LAYOUT


@pytest.mark.parametrize("old,new", [("train.val_size", "validation.size"), ("train.eval_every", "validation.every"),
                                     ("train.val_accuracy_items", "validation.accuracy_items")])
def test_a_moved_key_on_the_command_line_names_its_new_name(old, new):
    from harness.config.overrides import key_kind
    with pytest.raises(ConfigError, match=f"'{old}' is now '{new}'"):
        key_kind(old)
