"""The paper sweep presets against what LLM-Adapters and DoRA publish for LLaMA-7B
(harness/data/published/paper_hyperparameters.yaml, each value with its source line): every key
equals the published value, or the table lists it as a deviation of that preset with the preset's
value and why. `sweep=paper`: LLM-Adapters' protocol; `sweep=paper-prefix`: its prefix-tuning run,
whose training settings are its own; `sweep=paper-dora`: the DoRA paper's protocol, both ranks."""
from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from harness.config import CONF_DIR
from harness.config.overrides import resolve
from harness.data import DATA_DIR

PUBLISHED = yaml.safe_load((DATA_DIR / "published" / "paper_hyperparameters.yaml").read_text())
PRESETS = ("paper", "paper-prefix", "paper-dora")


def runs_of(preset: str) -> list[tuple[str, str, object]]:
    """(preset, method choice, config) of every run of a preset, composed one run at a time so each
    config is known by the conf/method file it came from (dora and dora_r16 are both named dora)."""
    params = yaml.safe_load((CONF_DIR / "sweep" / f"{preset}.yaml").read_text())["hydra"]["sweeper"]["params"]
    out = []
    for choice in str(params["method"]).split(","):
        for task in str(params["task"]).split(","):
            cfgs = resolve([f"sweep={preset}", f"method={choice}", f"task={task}"], True, here=False)[0]
            assert len(cfgs) == 1, (preset, choice, task)
            out.append((preset, choice, cfgs[0]))
    return out


RUNS = [run for preset in PRESETS for run in runs_of(preset)]


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


@pytest.mark.parametrize("preset,choice,cfg", RUNS, ids=[f"{p}-{m}-{c.task.name}" for p, m, c in RUNS])
def test_each_paper_run_uses_the_published_settings_or_says_why_not(preset, choice, cfg):
    entry = PUBLISHED["methods"][choice]
    deviations = (entry.get("deviations") or {}).get(preset) or {}
    for key, (value, source) in expected(choice, cfg.task.name).items():
        actual = OmegaConf.select(cfg, key)
        actual = OmegaConf.to_container(actual) if OmegaConf.is_config(actual) else actual
        if key in deviations:
            assert same(actual, deviations[key]["preset"]) and deviations[key]["why"], (key, actual)
            assert not same(actual, value), f"{key} is listed as a deviation but equals the published {value}"
        else:
            assert same(actual, value), f"{preset}: {choice} x {cfg.task.name}: {key}={actual!r}, published {value!r} ({source})"


def test_every_method_of_the_preset_has_an_entry_with_sources():
    assert {choice for _, choice, _ in RUNS} == set(PUBLISHED["methods"])
    for name, entry in PUBLISHED["methods"].items():
        assert entry["paper"], name
        assert set(entry.get("deviations") or {}) <= set(PRESETS), name
        for key, item in (entry["values"] or {}).items():
            assert item["source"] and "@" in item["source"], (name, key)  # file@commit
