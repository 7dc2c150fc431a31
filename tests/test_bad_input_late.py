"""Bad input that only the data or the loaded model reveals: refused in-process with one message naming
the fix, before the method is applied or anything trains, and nothing written under results/."""
from __future__ import annotations

import json
import re

import pytest

from harness.errors import ConfigError
from harness.pipeline import runner

GOOD = {"instruction": "1+1?", "input": "", "output": "The answer is 2.", "answer": "2"}


def refused(compose_run, tmp_path, *overrides) -> str:
    results = tmp_path / "results"
    cfg = compose_run(*overrides, results=str(results))
    with pytest.raises(ConfigError) as exc:
        runner.run(cfg)
    assert not list(results.rglob("*.json")) and not list(results.rglob("*.jsonl"))
    assert not list(results.rglob("*.log"))  # the run's log is removed with a refused run
    return str(exc.value)


def test_a_validation_split_as_large_as_the_training_set_is_refused(compose_run, tmp_path):
    # the old loop waited forever for a batch from no data
    train = tmp_path / "three.json"
    train.write_text(json.dumps([GOOD] * 3))
    message = refused(compose_run, tmp_path, "method=lora", f"task.train_set={train}", "validation.size=3",
                      "eval.enabled=false", "forgetting.enabled=false")
    assert "validation.size=3 holds out all 3 records" in message and "below 3" in message


def test_a_cutoff_beyond_the_models_context_is_refused(compose_run, tmp_path):
    message = refused(compose_run, tmp_path, "method=lora", "train.cutoff_len=4096", "forgetting.enabled=false")
    assert "train.cutoff_len=4096" in message and "context length (1024 positions)" in message


@pytest.mark.parametrize("method,key", [("lora", "method.peft.target_modules=[q_proj,query_key_value]"),
                                        ("bitfit", "method.bitfit_targets=[q_proj,dense_h_to_4h]")])
def test_target_modules_the_model_lacks_are_refused_after_loading(compose_run, tmp_path, method, key):
    message = refused(compose_run, tmp_path, f"method={method}", key, "forgetting.enabled=false")
    missing = key.split(",")[1].rstrip("]")
    assert f"['{missing}'] name no module of tiny-random" in message and "q_proj" in message


def test_adapter_targets_the_model_lacks_are_refused_after_loading(compose_run, tmp_path):
    message = refused(compose_run, tmp_path, "method=adapter_parallel", "method.adapter.target_modules=[up_proj,fc_in]",
                      "forgetting.enabled=false")
    assert "method.adapter.target_modules: 'fc_in' names no module of LlamaForCausalLM" in message


@pytest.mark.parametrize("override,words", [
    ("method.peft.r=eight", ["method.peft.r='eight'", "LoraConfig.r", "int"]),
    ("method.peft.lora_dropout=high", ["method.peft.lora_dropout='high'", "float"]),
    ("method.peft.use_rslora=3", ["method.peft.use_rslora=3", "bool"]),
    ("method.peft.init_lora_weights=pisa", ["method.peft.init_lora_weights='pisa'"]),
])
def test_peft_values_are_type_checked_against_the_config_class(compose_run, override, words):
    with pytest.raises(ConfigError) as exc:
        compose_run("method=lora", override)
    assert all(w in str(exc.value) for w in words), str(exc.value)


def test_values_peft_accepts_pass_the_type_check(compose_run):
    cfg = compose_run("method=lora", "method.peft.init_lora_weights=pissa_niter_4", "method.peft.lora_alpha=32",
                      "method.peft.target_modules=all-linear", "method.peft.lora_dropout=0")
    assert cfg.method.peft.init_lora_weights == "pissa_niter_4"


@pytest.mark.parametrize("overrides, world, fsdp, says", [
    (("method=lora", "train.batch_size=4", "train.micro_batch_size=1"), 3, False,
     "with 3 processes, train.batch_size (4) must be a multiple of train.micro_batch_size x processes (3)"),
    (("method=lora",), 2, True, "FSDP is for full fine-tuning"),
])
def test_what_only_the_launched_processes_reveal_is_refused_before_data_is_read(compose_run, overrides, world,
                                                                               fsdp, says):
    from harness.config import checks
    cfg = compose_run(*overrides)
    with pytest.raises(ConfigError, match=re.escape(says)):
        checks.check_processes(cfg, world, fsdp)
    checks.check_processes(cfg, 2 if world == 3 else 1, False)  # the same run on a fitting process group
