"""Reading inputs: run records (tolerating corrupt files) and the shipped published results.

Nothing here aggregates; `harness.report.aggregate` turns the records into rows and groups.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from harness.record import STATUSES

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "data" / "published" / "published_results.csv"
PUBLISHED_COLUMNS = ("source", "family", "model", "method", "rank", "lr", "task", "accuracy")


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


def check_record(obj) -> str | None:
    """Why `obj` is not a record (None when it is one)."""
    if not isinstance(obj, dict):
        return f"not a JSON object (a {type(obj).__name__})"
    if "status" not in obj:
        return "no 'status' field"
    if obj["status"] not in STATUSES:
        return f"unknown status {obj['status']!r} (expected one of {', '.join(STATUSES)})"
    if not isinstance(obj.get("run_info"), dict) and obj["status"] == "ok":
        return "status ok but no 'run_info'"
    return None


def read_one(path: Path) -> tuple[dict | None, Corrupt | None]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return None, Corrupt(str(path), f"unreadable ({exc})")
    if not text.strip():
        return None, Corrupt(str(path), "empty file")
    try:
        obj = json.loads(text)
    except ValueError as exc:  # truncated or not JSON at all
        return None, Corrupt(str(path), f"not valid JSON ({exc})")
    reason = check_record(obj)
    return (None, Corrupt(str(path), reason)) if reason else (obj, None)


def load_records(directory: Path) -> tuple[list[dict], list[Corrupt]]:
    """Every record in `directory` (*.json, sorted by name) and the files that are not records.
    The same run id twice (e.g. merged result dirs) keeps the one that finished last."""
    by_id: dict[str, dict] = {}
    corrupt: list[Corrupt] = []
    for path in sorted(Path(directory).glob("*.json")):
        rec, bad = read_one(path)
        if bad:
            corrupt.append(bad)
            continue
        rec.setdefault("run_id", path.stem)
        rec["_path"] = str(path)
        old = by_id.get(rec["run_id"])
        if old is None or _finished(rec) >= _finished(old):
            by_id[rec["run_id"]] = rec
    return list(by_id.values()), corrupt


def _finished(rec: dict) -> str:
    return str((rec.get("run_info") or {}).get("finished") or "")


def load_published(path: Path = PUBLISHED_CSV) -> pd.DataFrame:
    """The published accuracies (see harness/data/published/README.md), one row per value."""
    df = pd.read_csv(path)
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return df


def short_source(source: str) -> str:
    """'LLM-Adapters README (AGI-Edgerunners/LLM-Adapters@8166572)' -> 'LLM-Adapters README'."""
    return str(source).split(" (")[0].strip()
