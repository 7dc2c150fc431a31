"""A validation split of the training set, for choosing hyper-parameters without reading test data.

The split is a deterministic held-out slice of the training set: the first `validation.size` records
of a shuffle with a fixed seed (SPLIT_SEED, not the run's seed), so every run of a study, whatever
its seed or learning rate, holds out the same records and trains on the rest. Test sets are never
touched here (harness.study selects on these numbers only; a test proves it).

- loss: the token-mean loss over the validation examples (the training objective on held-out data),
  every validation.every optimizer steps and at the end;
- accuracy, on the first validation.accuracy_items validation records: commonsense records (their
  instruction ends in "Answer format: a/b/c") by the label word with the highest log-likelihood,
  the others by generating and extracting the number (or the letter, for AQuA-style answers).
"""
from __future__ import annotations

import re

import torch

from harness import tasks
from harness.pipeline import evaluate, prompts
from harness.record.digest import json_digest

SPLIT_SEED = 0
FORMAT = re.compile(r"Answer format:\s*([\w/ ]+?)\s*$")


def split(records: list[dict], size: int) -> tuple[list[dict], list[dict], dict]:
    """(training records, validation records, what was held out)."""
    if size <= 0:
        return records, [], {"items": 0}
    from harness.data import to_dataset
    shuffled = to_dataset(records).shuffle(seed=SPLIT_SEED).to_list()
    val, train = shuffled[:size], shuffled[size:]
    digest = json_digest([r["instruction"] for r in val])
    return train, val, {"items": len(val), "split_seed": SPLIT_SEED, "from": "the training set",
                        "instructions_sha256": digest}


@torch.no_grad()
def loss(model, tok, examples: list[dict], batch_size: int, device: torch.device, dtype: torch.dtype,
         detail: dict | None = None) -> float:
    """Token-mean loss over `examples` (sum over every label token / their count). `detail`, a dict
    when given, is refilled with what the loss's standard error needs (harness.analysis.selection): the
    examples and label tokens counted, each example's own token-mean loss and label tokens, and the
    standard error of the mean over examples (the record's validation_final, harness.pipeline.runner)."""
    was_training = model.training
    model.eval()
    from harness.pipeline.train import IGNORE, Collator
    collate = Collator(tok, packing=False)
    total, items = 0.0, 0
    per_loss: list[float] = []
    per_tokens: list[int] = []
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())  # the loss shifts labels: position 0 is no target
        with autocast:
            out = model(**batch, use_cache=False)
        total += float(out.loss) * n
        items += n
        if detail is not None and getattr(out, "logits", None) is not None:
            losses, tokens = example_losses(out.logits, batch["labels"], IGNORE)
            per_loss += losses
            per_tokens += tokens
    model.train(was_training)
    mean = round(total / max(1, items), 5)
    if detail is not None:
        from harness.analysis import selection
        detail.clear()
        detail.update({"items": len(examples), "label_tokens": items, "loss": mean})
        if len(per_loss) == len(examples):  # a model that returns no logits (a fused loss) gives none
            se = selection.ratio_se(per_loss, per_tokens)
            detail.update({"loss_se": round(se, 5) if se is not None else None,
                           "example_loss": [round(x, 5) for x in per_loss], "example_tokens": per_tokens})
    return mean


def example_losses(logits: torch.Tensor, labels: torch.Tensor, ignore: int) -> tuple[list[float], list[int]]:
    """Each row's token-mean next-token loss and its number of label tokens. Logits longer than the
    labels (prompt tuning's virtual tokens come first) are aligned on their last positions."""
    logits = logits[:, -labels.shape[1]:]
    losses, tokens = [], []
    for row_logits, row_labels in zip(logits, labels):  # a row at a time: one row's fp32 logits in memory
        target = row_labels[1:]
        n = int((target != ignore).sum())
        total = torch.nn.functional.cross_entropy(row_logits[:-1].float(), target, ignore_index=ignore,
                                                  reduction="sum")
        losses.append(float(total) / n if n else 0.0)
        tokens.append(n)
    return losses, tokens


def accuracy(model, tok, records: list[dict], style: str, device: torch.device, batch_size: int,
             max_new_tokens: int, precision: torch.dtype | None = None) -> dict:
    """Accuracy (%) on validation records, scored as the harness scores the test sets: each record
    in forwards of its own (its score does not depend on the others or the batch size) at the
    evaluation precision (`precision`, harness.pipeline.evaluate.evaluation_dtype; None: the model as it is)."""
    labelled = [r for r in records if FORMAT.search(r["instruction"])]
    generated = [r for r in records if not FORMAT.search(r["instruction"])]
    was_training = model.training
    model.eval()  # no dropout: right after training the model is still in training mode
    try:
        with evaluate.at_precision(model, precision):
            used = evaluate.precision_name(model)
            out = _accuracy(model, tok, labelled, generated, style, device, batch_size, max_new_tokens)
    finally:
        model.train(was_training)
    return {**out, "precision": used}


def _accuracy(model, tok, labelled: list[dict], generated: list[dict], style: str, device: torch.device,
              batch_size: int, max_new_tokens: int) -> dict:
    correct = 0
    if labelled:
        texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for r in labelled]
        options = [FORMAT.search(r["instruction"]).group(1).split("/") for r in labelled]
        scores = evaluate.option_logliks(model, tok, texts, [[evaluate.ANSWER_PREFIX + o for o in opts]
                                                             for opts in options], batch_size, device)
        correct += sum(opts[max(range(len(opts)), key=lambda j: s[j])] == r["answer"]
                       for r, opts, s in zip(labelled, options, scores))
    if generated:
        texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for r in generated]
        gens, _ = evaluate.generate_answers(model, tok, texts, max_new_tokens, batch_size, 1, device)
        for r, g in zip(generated, gens):
            kind = "letter" if r["answer"] in tuple("ABCDE") else "number"
            correct += tasks.correct_as(kind, tasks.extract_as(kind, prompts.response_text(g)), r["answer"])
    n = len(labelled) + len(generated)
    return {"accuracy": round(100.0 * correct / n, 4) if n else None, "n": n,
            "scoring": "label log-likelihood" if not generated else ("generate" if not labelled else "mixed")}
