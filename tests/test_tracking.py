"""W&B tracking, offline: the run directory, its config, summary and predictions table exist; no
secret reaches it; WANDB_MODE beats a configured key; an unreachable server falls back to offline."""
from __future__ import annotations

import enum
import logging
import socket
import sys
import time

from omegaconf import OmegaConf

from harness.pipeline import runner
from harness.record import tracking
from harness.record.schema import Record
from harness.record.tracking import resolve_mode

HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # the shape of a real token, not a real one


def _flushed(path, needle: bytes, seconds: float = 30) -> bytes:
    """The file's bytes once `needle` is in them: wandb-core's writer may still be flushing the
    .wandb log after run.finish() returns."""
    deadline = time.monotonic() + seconds
    while needle not in path.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    return path.read_bytes()


def test_offline_run_has_directory_summary_and_predictions(compose_run, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key: auto must mean offline
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRETSECRET")
    rec = runner.run(compose_run("method=lora", "wandb.enabled=true", f"wandb.dir={tmp_path / 'wb'}",
                                 "wandb.group=g1", "task.test_sets=[gsm8k]", results=tmp_path / "results"))
    assert rec.status == "ok"
    [run_dir] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    [log] = run_dir.glob("run-*.wandb")
    blob = _flushed(log, b"eval/gsm8k/accuracy")  # in the final summary: written last
    for needle in (b"eval/gsm8k/accuracy", b"throughput/tokens_per_second", b"train/loss", b"g1",
                   b"git:", b"tiny-random", rec.run_id.encode()):
        assert needle in blob, needle
    assert list(run_dir.glob("files/media/table/predictions_*.table.json"))
    for path in [*(tmp_path / "wb").rglob("*"), *(tmp_path / "results").rglob("*")]:
        if path.is_file():
            assert b"hf_SECRETSECRETSECRET" not in path.read_bytes(), path


def test_mode_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    assert resolve_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"
    assert resolve_mode("disabled") == "disabled"


def test_wandb_mode_env_beats_a_key_but_not_the_config(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    for env_mode, expected in (("offline", "offline"), ("dryrun", "offline"), ("disabled", "disabled"),
                               ("online", "online"), ("bogus", "online")):
        monkeypatch.setenv("WANDB_MODE", env_mode)
        assert resolve_mode("auto") == expected, env_mode
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode("online") == "online"  # an explicit config mode wins over everything
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode("offline") == "offline"

    class Mode(str, enum.Enum):  # the config schema may hand the mode over as a str-valued enum
        auto = "auto"
        offline = "offline"
    assert resolve_mode(Mode.offline) == "offline" and resolve_mode(Mode.auto) == "online"


def test_netrc_key_for_the_configured_server_means_online(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    (tmp_path / "netrc").write_text("machine wandb.example.org login user password " + "a" * 40 + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    assert resolve_mode("auto") == "online"
    monkeypatch.delenv("WANDB_BASE_URL")
    assert resolve_mode("auto") == "offline"


def _closed_port() -> int:
    with socket.socket() as s:  # bound then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cfg(tmp_path, mode="auto"):
    return OmegaConf.create({"wandb": {"enabled": True, "mode": mode, "project": "p", "group": None,
                                       "dir": str(tmp_path / "wb")},
                             "model": {"name": "tiny"}, "method": {"name": "lora"}, "task": {"name": "arithmetic"}})


def test_unreachable_server_falls_back_to_offline_with_one_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0123456789abcdef" * 2 + "01234567")  # fake, 40 hex
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(sys, "argv", ["harness", "method=lora", f"+hub_token={HF}"])
    resolved = {"method": {"name": "lora"}, "hub_token": HF, "model": {"revision": "ab" * 20}}
    caplog.set_level(logging.WARNING)
    t0 = time.monotonic()
    tracker = tracking.start(_cfg(tmp_path), "run-x", resolved, init_timeout=3)
    took = time.monotonic() - t0
    assert isinstance(tracker, tracking.WandbTracker) and tracker.run.offline, "must go on offline"
    tracker.log(1, {"train/loss": 1.5, "lr": None})
    tracker.finish(Record.parse({"status": "ok", "run_info": {}, "summary": {"avg_evaluated": 1.0}}), {})
    assert took < 40, took
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("harness")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    msg = warnings[0].getMessage()
    assert "offline" in msg and "wandb sync" in msg and "\n" not in msg
    [run_dir] = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    assert str(run_dir) in msg
    assert b"train/loss" in _flushed(next(run_dir.glob("run-*.wandb")), b"train/loss")
    for path in (tmp_path / "wb").rglob("*"):  # neither the config nor argv (wandb metadata) leaks it
        if path.is_file():
            assert HF.encode() not in path.read_bytes(), path
    assert sys.argv[-1] == f"+hub_token={HF}"  # the real argv is restored after wandb.init


def test_wandb_mode_disabled_starts_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tracker = tracking.start(_cfg(tmp_path), "run-x", {})
    assert isinstance(tracker, tracking.NullTracker) and not (tmp_path / "wb").exists()
