"""Answer extraction, exactly as LLM-Adapters' evaluate.py and commonsense_evaluate.py do it.

- numbers: remove commas, take the last match of -?\\d+\\.?\\d*, compare as float with |pred-gold| <= 0.001;
  no number is a parse failure (their code scores float('inf'), i.e. wrong);
- AQuA: the first capital A-E anywhere in the response (so a stray capital in a rationale counts);
- commonsense: the first occurrence of one of the set's label words (case-sensitive).
"""
from __future__ import annotations

import math
import re

NUMBER = re.compile(r"-?\d+\.?\d*")
LETTER = re.compile(r"A|B|C|D|E")
TOLERANCE = 0.001


def extract_number(text: str) -> float | None:
    matches = NUMBER.findall(text.replace(",", ""))
    if not matches:
        return None
    try:
        return float(matches[-1])
    except ValueError:  # cannot happen for this pattern, kept as their code does
        return None


def number_correct(pred: float | None, gold: str) -> bool:
    if pred is None or math.isinf(pred) or math.isnan(pred):
        return False
    return abs(float(gold) - pred) <= TOLERANCE


def extract_letter(text: str) -> str | None:
    m = LETTER.search(text.strip())
    return m.group(0) if m else None


def extract_label(text: str, labels: list[str]) -> str | None:
    """The first occurrence in `text` of any of `labels` (regex alternation semantics)."""
    pattern = re.compile("|".join(re.escape(w) for w in labels))
    m = pattern.search(text.strip())
    return m.group(0) if m else None


def answer_options(instruction: str, default: list[str]) -> list[str]:
    """The label words an item offers, read from its 'Answer format: a/b/c' line (ARC items have 3-5)."""
    idx = instruction.rfind("Answer format:")
    if idx < 0:
        return list(default)
    options = [w.strip() for w in instruction[idx + len("Answer format:"):].strip().split("/")]
    return [w for w in options if w] or list(default)
