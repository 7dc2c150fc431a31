"""The typed run record (harness.record.schema): every committed record reads back unchanged, a field of
the wrong type is refused with its name, and what older records lack is read the current way."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import record
from harness.config import versions
from harness.record.schema import Record

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted(p for p in [*REPO.glob("results/**/runs/*.json"), *REPO.glob("tests/fixtures/**/*.json")]
                   if p.parent.name == "runs" or "fixtures" in p.parts)


def test_every_committed_record_reads_and_writes_back_unchanged():
    """Unchanged but for the config's layout: an older record's config reads in the current layout
    (harness.config.versions; that its run id survives is tests/test_config_versions.py)."""
    assert len(COMMITTED) > 50  # baselines, the GPU records, the study's runs and the test fixtures
    for path in COMMITTED:
        raw = json.loads(path.read_text())
        if not isinstance(raw, dict) or "status" not in raw:  # a fixture of a corrupt file
            continue
        out = Record.parse(raw).to_json()
        assert out.pop("schema") == versions.LAYOUT, path
        layout = raw.pop("schema", 1)
        config, raw_config = out.get("run_info", {}).pop("config", None), raw.get("run_info", {}).pop("config", None)
        assert out == raw, path
        assert config == (raw_config if layout == versions.LAYOUT else versions.upgrade(raw_config, layout)), path
        assert out["run_info"]["model"] and out["run_info"]["method"] and out["run_info"]["task"], path


def test_a_field_of_the_wrong_type_is_refused_with_its_name(tmp_path):
    raw = next(r for p in COMMITTED if (r := json.loads(p.read_text())) and isinstance(r, dict) and r.get("eval"))
    name = next(iter(raw["eval"]))
    raw["eval"][name]["accuracy"] = "high"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    rec, why = record.read_one(path)
    assert rec is None and f"eval.{name}.accuracy" in why.reason and "number" in why.reason
    raw["eval"][name]["accuracy"], raw["status"] = 50.0, "finished"
    path.write_text(json.dumps(raw))
    assert "unknown status 'finished'" in record.read_one(path)[1].reason


def test_a_record_missing_sections_reads_as_empty_ones():
    """A hand-made or older record names the run only in its config and its stage as tags.stage."""
    rec = Record.parse({"status": "ok", "run_info": {"config": {
        "model": {"name": "m"}, "method": {"name": "lora", "lr": 3e-4}, "task": {"name": "arithmetic",
        "train_set": "math_10k"}, "seed": 2, "tags": {"stage": "tune"}}}})
    info = rec.run_info
    assert (info.model, info.method, info.task, info.train_set, info.seed) == ("m", "lora", "arithmetic", "math_10k", 2)
    assert info.stage == "tune" and info.setting("method.lr") == 3e-4 and info.setting("train.lr", 1) == 1
    assert rec.eval == {} and rec.train_info is None and rec.throughput.tokens_per_second is None
    assert rec.phase_memory("train").peak_rss_gib is None and rec.code_id is None and rec.finished == ""
    assert rec.to_json() == {"schema": versions.LAYOUT, "status": "ok", "run_info": {"config": info.config, "model": "m", "method": "lora",
                                                          "task": "arithmetic", "train_set": "math_10k", "seed": 2}}


@pytest.mark.parametrize("raw, reason", [([], "not a JSON object"), ({"run_id": "x"}, "no 'status'"),
                                         ({"status": "ok"}, "no 'run_info'")])
def test_what_is_not_a_record_is_named(raw, reason):
    with pytest.raises(ValueError, match=reason):
        Record.parse(raw)
