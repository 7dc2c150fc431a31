"""W&B tracking, offline: the run directory, its config, summary and predictions table exist; no
secret reaches it."""
from __future__ import annotations

from harness import runner
from harness.tracking import resolve_mode, scrub


def test_offline_run_has_directory_summary_and_predictions(compose_run, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key: auto must mean offline
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRETSECRET")
    rec = runner.run(compose_run("method=lora", "wandb.enabled=true", f"wandb.dir={tmp_path / 'wb'}",
                                 "wandb.group=g1", "task.test_sets=[gsm8k]", results=tmp_path / "results"))
    assert rec["status"] == "ok"
    [run_dir] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    [log] = run_dir.glob("run-*.wandb")
    blob = log.read_bytes()
    for needle in (b"eval/gsm8k/accuracy", b"throughput/tokens_per_second", b"train/loss", b"g1",
                   b"git:", b"tiny-random", rec["run_id"].encode()):
        assert needle in blob, needle
    assert list(run_dir.glob("files/media/table/predictions_*.table.json"))
    for path in [*(tmp_path / "wb").rglob("*"), *(tmp_path / "results").rglob("*")]:
        if path.is_file():
            assert b"hf_SECRETSECRETSECRET" not in path.read_bytes(), path


def test_scrub_removes_secret_looking_keys():
    cfg = {"wandb": {"api_key": "k", "project": "p"}, "hub_token": "t", "nested": [{"password": "x"}],
           "model": {"name": "m"}}
    out = scrub(cfg)
    assert out["wandb"]["api_key"] == "<redacted>" and out["hub_token"] == "<redacted>"
    assert out["nested"][0]["password"] == "<redacted>" and out["model"]["name"] == "m"


def test_mode_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"
