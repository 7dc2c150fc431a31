"""Run records: the run id derived from the resolved config, paths, atomic writes, completeness.

One JSON record per run under results/runs/<run-id>.json, written last and atomically (temp file,
fsync, rename), so a record that exists is whole; per-set predictions under
results/predictions/<run-id>/<set>.jsonl are written before it.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from harness.config import NON_SEMANTIC_KEYS, versions
from harness.errors import ConfigError
from harness.record import atomic
from harness.record.digest import json_digest
from harness.record.schema import SCHEMA_VERSION, STATUSES, TERMINAL, Record  # noqa: F401 (re-exported)


def semantic_config(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in NON_SEMANTIC_KEYS}


def run_id(cfg: dict, device_type: str = "cpu") -> str:
    """Readable prefix + hash of everything that changes what the run computes, the kind of device
    included (a CPU record must not stand in for a GPU run of the same config). Hashed in the oldest
    config layout that expresses the run (harness.config.versions), so a layout change keeps ids."""
    digest = json_digest({**versions.id_layout(semantic_config(cfg)), "_device_type": device_type}, 10)
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

    @property
    def log(self) -> Path:
        return self.results_dir / "logs" / f"{self.run_id}.log"


# ---- reading ---------------------------------------------------------------------------------
# The one reader of record files: the runner's skip check, the report, the regression gate, the
# sweep summary and the VRAM validation must agree on what counts as a record. Kept free of pandas
# and of harness.report so that the runner and the sweep callback do not import them.

@dataclass(frozen=True)
class Corrupt:
    """A file under runs/ that is not a usable record, and why."""
    path: str
    reason: str

    def __str__(self) -> str:
        return f"corrupt: {self.path}: {self.reason}"


def runs_dir(path: Path) -> Path | None:
    """Where the records are: <path>/runs when it exists (a results dir), else <path> itself
    (a directory of records, e.g. results/baselines/default); None when neither is a directory."""
    path = Path(path)
    if (path / "runs").is_dir():
        return path / "runs"
    return path if path.is_dir() else None


def read_one(path: Path) -> tuple[Record | None, Corrupt | None]:
    """(record, None), or (None, why the file is not one): a caller that lists files can say why."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return None, Corrupt(str(path), f"unreadable ({exc})")
    if not text.strip():
        return None, Corrupt(str(path), "empty file")
    try:
        obj = json.loads(text)
    except ValueError as exc:  # truncated or not JSON at all
        return None, Corrupt(str(path), f"not valid JSON ({exc})")
    try:
        rec = Record.parse(obj)
    except ValueError as exc:
        return None, Corrupt(str(path), str(exc))
    if not rec.run_id:
        rec.run_id = Path(path).stem
    return rec, None


class Stored(NamedTuple):
    """A record and the file it was read from (its predictions lie beside it: ../predictions/<run id>/)."""
    path: Path
    record: Record


def load_records(directory: Path) -> tuple[list[Stored], list[Corrupt]]:
    """Every record in `directory` (*.json, sorted by name; none when it does not exist) with its
    file, and the files that are not records. The same run id twice (e.g. merged result dirs) keeps
    the one that finished last."""
    by_id: dict[str, Stored] = {}
    corrupt: list[Corrupt] = []
    for path in sorted(Path(directory).glob("*.json")):
        rec, bad = read_one(path)
        if bad:
            corrupt.append(bad)
            continue
        old = by_id.get(rec.run_id)
        if old is None or rec.finished >= old.record.finished:
            by_id[rec.run_id] = Stored(path, rec)
    return list(by_id.values()), corrupt


def read_record(path: Path) -> Record | None:
    """The record at `path`, or None if it is missing or not a record (a corrupt file is rerun)."""
    return read_one(path)[0]


def write(path: Path, rec: Record) -> None:
    """Write a record atomically (a record that exists is whole)."""
    atomic.write_json(path, rec.to_json())


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
