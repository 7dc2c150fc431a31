"""Reproducibility and security guarantees."""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from harness import data
from harness.errors import ModelError
from harness.pipeline import evaluate, measure, models, prompts, runner

TIMING_KEYS = {"seconds", "questions_per_second", "generated_tokens_per_second"}


def metrics_only(rec: dict) -> dict:
    """What must be identical between two runs of the same config: everything but timings/memory."""
    rec = rec.to_json()
    evals = {k: {m: v for m, v in d.items() if m not in TIMING_KEYS} for k, d in rec["eval"].items()}
    train = rec["train_info"] or {}
    return {"eval": evals, "summary": rec["summary"], "losses": train.get("losses"), "params": rec["params"],
            "forgetting": rec.get("forgetting"), "data": rec["data"]}


def test_same_config_and_seed_give_identical_metrics(compose_run, tmp_path):
    cfg = ["method=lora", "forgetting.enabled=true", "train.max_steps=3"]
    first = runner.run(compose_run(*cfg, results=tmp_path / "a"))
    second = runner.run(compose_run(*cfg, results=tmp_path / "b"))
    assert first.run_id == second.run_id
    assert metrics_only(first) == metrics_only(second)
    # the host's speed, measured beside training for the regression gate, is in the record
    assert first.throughput.host_gflops > 0 and second.throughput.host_gflops > 0
    for name in first.eval:
        a = (tmp_path / "a" / "predictions" / first.run_id / f"{name}.jsonl").read_text()
        b = (tmp_path / "b" / "predictions" / second.run_id / f"{name}.jsonl").read_text()
        assert a == b


def test_measuring_the_hosts_speed_leaves_the_random_streams_alone():
    """It runs between the method's set-up and training: drawing from torch's global generator there
    would change the data order and dropout of every run that measures it."""
    torch.manual_seed(7)
    want = torch.rand(3)
    torch.manual_seed(7)
    assert measure.host_gflops(torch.device("cpu"), windows=1, seconds=0.01) > 0
    assert torch.equal(torch.rand(3), want)


def test_a_record_holds_what_is_needed_to_rerun_it(compose_run, tmp_path):
    rec = runner.run(compose_run("method=bitfit", results=tmp_path / "a"))
    for key in ("config",):
        assert getattr(rec.run_info, key)
    assert rec.meta_info.versions["transformers"] and rec.meta_info.git_sha
    assert all(len(t["sha256"]) == 64 for t in rec.data.test.values())
    assert all(len(t["sha256"]) == 64 for t in rec.data.train)
    # feed the recorded config back in: same run id, same numbers
    cfg = OmegaConf.create(rec.run_info.config)
    cfg.results_dir = str(tmp_path / "b")
    again = runner.run(cfg)
    assert again.run_id == rec.run_id and metrics_only(again) == metrics_only(rec)


def test_greedy_predictions_identical_at_batch_1_and_64(tiny):
    model, tok = tiny
    records, _ = data.shipped("test/svamp")
    texts = [prompts.eval_prompt(r["instruction"]) for r in records[:64]]
    one, _ = evaluate.generate_answers(model, tok, texts, 12, 1, 1, torch.device("cpu"))
    many, _ = evaluate.generate_answers(model, tok, texts, 12, 64, 1, torch.device("cpu"))
    assert one == many


@pytest.fixture
def pickle_only_model(tiny, tmp_path):
    model, tok = tiny
    path = tmp_path / "pickle-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    (path / "model.safetensors").unlink()  # transformers 5 writes safetensors only: make a pickle copy
    torch.save(model.state_dict(), path / "pytorch_model.bin")
    return path


def test_pickle_weights_are_refused_unless_the_user_opts_in(pickle_only_model, compose_run):
    cfg = compose_run("model=qwen2.5-0.5b", f"model.name_or_path={pickle_only_model}", "method=none")
    with pytest.raises(ModelError, match="allow_pickle_weights"):
        models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, cfg.cache_dir)
    cfg.model.allow_pickle_weights = True
    model, _, _ = models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, cfg.cache_dir)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_remote_code_is_never_trusted_by_default(compose_run, monkeypatch, tiny):
    import transformers
    seen = []
    real_model, real_tok = transformers.AutoModelForCausalLM.from_pretrained, transformers.AutoTokenizer.from_pretrained

    def spy(real):
        def call(*args, **kwargs):
            seen.append(kwargs.get("trust_remote_code"))
            return real(*args, **kwargs)
        return call

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy(real_model))
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy(real_tok))
    cfg = compose_run("method=none")
    models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, cfg.cache_dir)
    assert seen and all(v is False for v in seen)
    from harness.config.overrides import resolve_one
    for model_yaml in ("llama-7b", "qwen2.5-0.5b"):  # hub models (installed here or not)
        assert resolve_one([f"model={model_yaml}"], here=False).model.trust_remote_code is False
    for model_yaml in ("smollm2-135m", "gemma3-270m"):  # GGUF conversions: a directory this harness wrote
        assert "trust_remote_code" not in resolve_one([f"model={model_yaml}"], here=False).model


def test_records_never_hold_environment_secrets(compose_run, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_TOPSECRET_abc123")
    monkeypatch.setenv("WANDB_API_KEY", "wandbkey_TOPSECRET_0000000000000000000000")
    rec = runner.run(compose_run("method=none", results=tmp_path))
    blob = json.dumps(rec.to_json()) + "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "TOPSECRET" not in blob
