"""From training examples to forwards: which examples form each optimizer step, how a step is split
into forwards, and how a forward's examples become tensors.

None of this changes the objective. A step's loss is the sum of its label-token losses divided by
the step's label-token count (harness.train), so however a step's examples are split (a fixed
number of rows, a token budget) or laid out (padded rows, or one packed row), the gradient is the
same; tests check that. What changes is how much padding is computed:
- steps: shuffled; with train.group_by_length, windows of 64 steps' worth of examples are sorted by
  length before being cut into steps (Hugging Face's megabatches), so a step's examples are alike;
- forwards: a step's examples sorted by length, then cut into train.micro_batch_size rows, or filled
  up to train.max_tokens_per_batch tokens per forward (rows x longest row, or the packed length);
- packing (train.packing): a forward's examples concatenated into one row, position ids restarting
  at each example and no attention mask, from which transformers builds a block-diagonal causal
  mask (masking_utils' packed-sequence detection, sdpa and eager included): no padding at all, and
  no attention across examples. The first label of each example is ignored, as padding makes it.
"""
from __future__ import annotations

import random

import torch

IGNORE = -100


def epoch_steps(lengths: list[int], batch_size: int, seed: int, group_by_length: bool) -> list[list[int]]:
    """One epoch of optimizer steps, each a list of example indices (the last may be short)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    window = batch_size * 64
    steps = []
    for s in range(0, len(order), window):
        chunk = sorted(order[s:s + window], key=lambda i: -lengths[i])
        steps += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(steps)
    return steps


def split_step(step: list[int], lengths: list[int], micro_batch_size: int, max_tokens: int = 0,
               packing: bool = False) -> list[list[int]]:
    """The forwards of one step: its examples longest first, in rows of micro_batch_size, or, with
    a token budget, as many as fit (padded: rows x longest; packed: the sum of lengths). An example
    longer than the budget goes alone."""
    ordered = sorted(step, key=lambda i: -lengths[i])
    if not max_tokens:
        return [ordered[i:i + micro_batch_size] for i in range(0, len(ordered), micro_batch_size)]
    out: list[list[int]] = []
    for i in ordered:
        if out:
            current = out[-1]
            size = (sum(lengths[j] for j in current) + lengths[i] if packing
                    else (len(current) + 1) * lengths[current[0]])  # longest first: row 0 is the widest
            if size <= max_tokens:
                current.append(i)
                continue
        out.append([i])
    return out


def collate(examples: list[dict], pad_id: int, device: torch.device, packing: bool = False) -> dict:
    """Tensors of one forward, and its token counts (counted on the CPU, before the copy: no device
    synchronisation per forward)."""
    if packing:
        return _packed(examples, device)
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    counts = {"items": int((labels[:, 1:] != IGNORE).sum()), "real": int(mask.sum()), "padded": ids.numel(),
              "rows": len(examples)}
    return {"inputs": {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)},
            "counts": counts}


def _packed(examples: list[dict], device: torch.device) -> dict:
    ids = torch.tensor([t for e in examples for t in e["input_ids"]])[None]
    labels = torch.tensor([IGNORE if k == 0 else t for e in examples for k, t in enumerate(e["labels"])])[None]
    positions = torch.tensor([k for e in examples for k in range(len(e["input_ids"]))])[None]
    counts = {"items": int((labels[:, 1:] != IGNORE).sum()), "real": ids.numel(), "padded": ids.numel(),
              "rows": len(examples)}
    return {"inputs": {"input_ids": ids.to(device), "position_ids": positions.to(device), "labels": labels.to(device)},
            "counts": counts}
