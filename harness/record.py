"""Run records: the run id derived from the resolved config, paths, atomic writes, completeness.

One JSON record per run under results/runs/<run-id>.json, written last and atomically (temp file,
fsync, rename), so a record that exists is whole; per-set predictions under
results/predictions/<run-id>/<set>.jsonl are written before it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from harness.config import NON_SEMANTIC_KEYS
from harness.errors import ConfigError

SCHEMA_VERSION = 1
# statuses that are an answer: a rerun skips them unless force=true ('failed' is retried)
TERMINAL = ("ok", "diverged", "oom", "predicted_oom")
STATUSES = TERMINAL + ("failed",)


def semantic_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in NON_SEMANTIC_KEYS}


def run_id(cfg: dict, device_type: str = "cpu") -> str:
    """Readable prefix + hash of everything that changes what the run computes, the kind of device
    included (a CPU record must not stand in for a GPU run of the same config)."""
    blob = json.dumps({**semantic_config(cfg), "_device_type": device_type}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
    return f"{cfg['model']['name']}__{cfg['method']['name']}__{cfg['task']['name']}__s{cfg['seed']}__{digest}"


@dataclass(frozen=True)
class RunPaths:
    results_dir: Path
    run_id: str

    @property
    def record(self) -> Path:
        return self.results_dir / "runs" / f"{self.run_id}.json"

    @property
    def predictions(self) -> Path:
        return self.results_dir / "predictions" / self.run_id

    @property
    def checkpoint(self) -> Path:
        return self.results_dir / "checkpoints" / self.run_id

    @property
    def train_state(self) -> Path:
        return self.results_dir / "train_state" / self.run_id


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, fsync, rename: readers see the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def replace_dir(target: Path, fill) -> None:
    """Fill a temporary sibling directory, then swap it in: a kill leaves the old one or none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        fill(str(tmp))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=str) + "\n")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None if it is missing or unreadable (a corrupt file is not a record)."""
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and rec.get("status") in STATUSES else None


def is_done(path: Path) -> bool:
    rec = read_record(path)
    return rec is not None and rec["status"] in TERMINAL


def check_writable(results_dir: Path) -> None:
    """Fail before any work if results cannot be written."""
    runs = results_dir / "runs"
    try:
        runs.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=runs, prefix=".probe.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(f"cannot write to results directory {runs}: {exc.strerror or exc}; "
                          f"fix its permissions or pass results_dir=<writable dir>") from exc
