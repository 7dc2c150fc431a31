"""harness.config.secrets: secrets are redacted by key and by shape; ordinary config keys and values survive."""
from __future__ import annotations

import dataclasses
import sys
import typing
from pathlib import Path

import torch
import yaml

from harness.config.secrets import REDACTED, is_secret_key, redact, redact_argv
from harness.record import env

HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # the shape of a real token, not a real one
GHP = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
PAT = "github_pat_" + "11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz"
SK = "sk-proj-" + "abcdefghijklmnopqrstuvwxyz0123456789"
HEX40 = "0123456789abcdef0123456789abcdef01234567"
REPO = Path(__file__).resolve().parents[1]


def test_redact_by_key_and_by_value_recursively():
    cfg = {"wandb": {"api_key": HEX40, "project": "p", "apiKey": "k2"}, "hub_token": "t",
           "nested": [{"password": "x"}, {"client_secret": {"deep": 1}}], "HF_TOKEN": "abc",
           "private_key": "pem", "credentials": ["a"], "auth": "basic xyz",
           "note": f"see https://{HF}@huggingface.co", "tags": [GHP, "ok"], "pat": PAT, "openai": SK,
           "use_auth_token": True, "token": None,
           "model": {"name": "m", "revision": HEX40}, "git_sha": HEX40, "cache_dir": "/data/hf_cache"}
    out = redact(cfg)
    for path in (("wandb", "api_key"), ("wandb", "apiKey"), ("hub_token",), ("HF_TOKEN",), ("private_key",),
                 ("credentials",), ("auth",), ("note",), ("pat",), ("openai",)):
        node = out
        for k in path:
            node = node[k]
        assert node == REDACTED, path
    assert out["nested"] == [{"password": REDACTED}, {"client_secret": REDACTED}]
    assert out["tags"] == [REDACTED, "ok"]
    # values that cannot be secrets, hex model revisions, git shas and paths are kept
    assert out["use_auth_token"] is True and out["token"] is None
    assert out["model"] == {"name": "m", "revision": HEX40} and out["git_sha"] == HEX40
    assert out["cache_dir"] == "/data/hf_cache" and out["wandb"]["project"] == "p"
    assert cfg["wandb"]["api_key"] == HEX40  # a copy: the caller's config is untouched


def test_redact_argv():
    argv = ["method=lora", "+wandb.api_key=abc", f"hf_token={HF}", f"model.revision={HEX40}",
            f"note={HF}", GHP, "--token", "s3cret", "--use-auth-token", "seed=1", "--password=pw",
            "model.tiny={hidden_size: 64, hf_token: 'abc', pad_token_id: 0}", "results_dir=/data/desk-organizer-"
            "dataset-with-a-long-name-v2", "++wandb.api_key=" + HEX40, "use_auth_token=true"]
    assert redact_argv(argv) == [
        "method=lora", "+wandb.api_key=<redacted>", "hf_token=<redacted>", f"model.revision={HEX40}",
        "note=<redacted>", REDACTED, "--token", REDACTED, "--use-auth-token", "seed=1", "--password=<redacted>",
        "model.tiny={hidden_size: 64, hf_token: <redacted>, pad_token_id: 0}",
        "results_dir=/data/desk-organizer-dataset-with-a-long-name-v2", "++wandb.api_key=<redacted>",
        "use_auth_token=true"]


def _schema_keys(cls, prefix=""):
    """Every dotted key of a config dataclass, nested sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        yield path
        if dataclasses.is_dataclass(hints.get(f.name)):
            yield from _schema_keys(hints[f.name], path + ".")


def _yaml_keys(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield f"{prefix}{k}"
            yield from _yaml_keys(v, f"{prefix}{k}.")


def test_every_config_key_survives():
    """No key the harness config can hold is mistaken for a secret: the typed schema, every conf/ YAML,
    the peft config fields `method.peft` passes through, LlamaConfig fields (`model.tiny`) and record keys."""
    import peft
    from transformers import LlamaConfig

    from harness.config import MODEL_SCHEMAS, RunConfig
    keys = set(_schema_keys(RunConfig))
    for schema in MODEL_SCHEMAS.values():  # each model source's own keys
        keys.update(_schema_keys(schema, "model."))
    for path in (REPO / "conf").rglob("*.yaml"):
        keys.update(_yaml_keys(yaml.safe_load(path.read_text()) or {}))
    for name in dir(peft):
        cls = getattr(peft, name)
        if isinstance(cls, type) and issubclass(cls, peft.PeftConfig) and dataclasses.is_dataclass(cls):
            keys.update(f"method.peft.{f.name}" for f in dataclasses.fields(cls))
    keys.update(f"model.tiny.{k}" for k in LlamaConfig().to_dict())
    keys.update({"pad_token", "throughput.tokens_per_second", "max_new_tokens", "keep_last", "author",
                 "cache_key", "token_count", "auth_method", "meta_info.git_sha", "meta_info.argv"})
    assert {"method.peft.target_modules", "method.peft.lora_alpha", "train.max_steps", "cache_dir",
            "model.tiny.pad_token_id", "method.peft.num_virtual_tokens", "model.revision"} <= keys
    secret = sorted(k for k in keys if is_secret_key(k))
    assert not secret, secret
    doc = {k: "value" for k in keys}
    assert redact(doc) == doc
    argv = [f"{k}=value" for k in sorted(keys)]
    assert redact_argv(argv) == argv


def test_environment_records_argv_redacted(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["harness", "method=lora", "+wandb.api_key=s3cretXYZ", f"hf_token={HF}",
                                      f"model.revision={HEX40}"])
    info = env.environment(torch.device("cpu"))
    assert info["argv"] == ["method=lora", "+wandb.api_key=<redacted>", "hf_token=<redacted>",
                            f"model.revision={HEX40}"]
    assert "s3cretXYZ" not in str(info["argv"]) and HF not in str(info)
