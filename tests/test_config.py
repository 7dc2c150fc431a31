"""Configuration: typed keys, run ids, the model= shortcut for hub ids and directories."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from harness import record
from harness.config import model_slug, rewrite_model_argument
from harness.config.overrides import resolve_one
from harness.config.overrides import resolve
from harness.errors import ConfigError

KNOWN = {"smollm2-135m", "tiny-random", "hub"}


def resolved(*overrides):
    return OmegaConf.to_container(resolve_one(list(overrides)), resolve=True)


def test_a_typo_fails_at_start_up():
    with pytest.raises(ConfigError, match="max_step"):
        resolve_one(["train.max_step=3"])


def test_model_argument_with_a_slash_means_a_hub_id_or_directory():
    assert rewrite_model_argument(["model=Qwen/Qwen2.5-0.5B", "method=lora"], KNOWN) == \
        ["model=hub", "model.name_or_path=Qwen/Qwen2.5-0.5B", "method=lora"]
    assert rewrite_model_argument(["model=/models/my-llama"], KNOWN) == ["model=hub", "model.name_or_path=/models/my-llama"]
    assert rewrite_model_argument(["model=tiny-random"], KNOWN) == ["model=tiny-random"]
    assert rewrite_model_argument(["model=gpt5"], KNOWN) == ["model=gpt5"]  # Hydra lists the options
    assert rewrite_model_argument(["model=a/b,c/d"], KNOWN) == ["model=a/b,c/d"]  # sweeps stay as they are
    cfg = resolved("model=hub", "model.name_or_path=Qwen/Qwen2.5-0.5B")
    assert cfg["model"]["name"] == "Qwen2.5-0.5B" and cfg["model"]["source"] == "hub"
    assert model_slug("/models/my-llama/") == "my-llama"


def test_run_id_ignores_operational_keys_and_depends_on_what_is_computed():
    base = resolved("method=lora")
    same = resolved("method=lora", "force=true", "results_dir=/elsewhere", "wandb.enabled=false", "save=false")
    assert record.run_id(base) == record.run_id(same)
    assert record.run_id(base) != record.run_id(resolved("method=lora", "train.max_steps=7"))
    assert record.run_id(base) != record.run_id(resolved("method=lora", "seed=1"))
    assert record.run_id(base, "cpu") != record.run_id(base, "cuda")
    assert record.run_id(base).startswith("smollm2-135m__lora__arithmetic__s42__")


def test_paper_preset_trains_on_the_papers_sets():
    cfgs, _, multirun = resolve(["sweep=paper"], here=False)
    assert multirun and len(cfgs) == 12  # 6 methods x 2 families
    assert {c.task.name: c.task.train_set for c in cfgs} == {"arithmetic": "math_10k", "commonsense": "commonsense_170k"}
    assert resolve_one([]).task.train_set == "math_offline"


@pytest.mark.parametrize("overrides", [["method=lora,full", "seed=1,2", "train.lr=3"],
                                       ["+method.peft.r=4,8", "model=smollm2-135m", "seed=range(1,4)"],
                                       ["method=glob(lora*)", "task=arithmetic"],
                                       ["method=lora,full", "seed=1", "method=dora,bitfit", "seed=2,3"]])
def test_sweep_expansion_is_the_runs_hydra_launches_in_its_order(overrides):
    # harness.config.overrides expands sweeps with Hydra's public parser; Hydra's own sweeper (a private
    # class, used here only as the oracle) must launch the same runs in the same order
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from harness.config.overrides import parse, runs_of
    assert runs_of(parse(overrides)) == BasicSweeper.split_arguments(parse(overrides), None)[0]


def test_an_interval_sweep_is_refused_with_the_fix():
    from harness.config.overrides import parse, runs_of
    from harness.errors import ConfigError
    with pytest.raises(ConfigError, match=r"give the values"):
        runs_of(parse(["train.warmup_steps=interval(0,1)"]))


# ---- each model source its own schema --------------------------------------------------------------

@pytest.mark.parametrize("model", ["tiny-random", "smollm2-135m", "llama-7b", "hub"])
def test_each_model_composes_into_its_sources_schema_and_holds_only_its_keys(model):
    from harness.config import MODEL_KEYS_BY_SOURCE, MODEL_SCHEMAS
    extra = ["model.name_or_path=Qwen/Qwen2.5-0.5B"] if model == "hub" else []
    cfg = resolve_one([f"model={model}", *extra], here=False)
    assert OmegaConf.get_type(cfg.model) is MODEL_SCHEMAS[cfg.model.source]
    others = {k for source, keys in MODEL_KEYS_BY_SOURCE.items() if source != cfg.model.source for k in keys}
    assert not others & set(cfg.model), others & set(cfg.model)


def test_the_source_of_a_model_is_not_an_override():
    with pytest.raises(ConfigError, match="model.source is the chosen model's"):
        resolve_one(["model=tiny-random", "model.source=hub"])
