"""The shipped published results (harness/data/published/), read for the accuracy tables.

Run records are read by harness.record, the one reader shared with the runner, the regression
gate and the sweep summary; nothing here aggregates (that is harness.report.aggregate).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "data" / "published" / "published_results.csv"
PUBLISHED_COLUMNS = ("source", "family", "model", "method", "rank", "lr", "task", "accuracy")


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
