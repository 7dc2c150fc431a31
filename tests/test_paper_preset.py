"""The `paper` sweep preset against what LLM-Adapters and DoRA publish for LLaMA-7B
(harness/data/published/paper_hyperparameters.yaml, each value with its source line): every key
equals the published value, or the table lists it as a deviation with the preset's value and why
(`sweep=paper-prefix`: LLM-Adapters' prefix-tuning run, whose training settings are its own)."""
from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from harness.config.overrides import resolve
from harness.data import DATA_DIR

PUBLISHED = yaml.safe_load((DATA_DIR / "published" / "paper_hyperparameters.yaml").read_text())
RUNS = [cfg for preset in ("paper", "paper-prefix") for cfg in resolve([f"sweep={preset}"], True, here=False)[0]]


def expected(method: str, task: str) -> dict:
    """key -> (value, source) the papers publish for this run."""
    sections = [PUBLISHED["checkpoint"], PUBLISHED["common"], PUBLISHED["tasks"][task],
                PUBLISHED["methods"][method]["values"]]
    return {key: (entry["value"], entry["source"]) for section in sections for key, entry in section.items()}


def same(actual, published) -> bool:
    if isinstance(published, list):
        return sorted(actual) == sorted(published)  # target modules: a set
    if isinstance(published, float):
        return actual == pytest.approx(published)
    return actual == published


@pytest.mark.parametrize("cfg", RUNS, ids=[f"{c.method.name}-{c.task.name}" for c in RUNS])
def test_each_paper_run_uses_the_published_settings_or_says_why_not(cfg):
    entry = PUBLISHED["methods"][cfg.method.name]
    deviations = entry.get("deviations") or {}
    for key, (value, source) in expected(cfg.method.name, cfg.task.name).items():
        actual = OmegaConf.select(cfg, key)
        actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
        if key in deviations:
            assert same(actual, deviations[key]["preset"]) and deviations[key]["why"], (key, actual)
            assert not same(actual, value), f"{key} is listed as a deviation but equals the published {value}"
        else:
            assert same(actual, value), f"{cfg.method.name} x {cfg.task.name}: {key}={actual!r}, published {value!r} ({source})"


def test_every_method_of_the_preset_has_an_entry_with_sources():
    assert {c.method.name for c in RUNS} == set(PUBLISHED["methods"])
    for name, entry in PUBLISHED["methods"].items():
        assert entry["paper"], name
        for key, item in (entry["values"] or {}).items():
            assert item["source"] and "@" in item["source"], (name, key)  # file@commit
