"""A validation split of the training set, for choosing hyper-parameters without reading test data.

The split is a deterministic held-out slice of the training set: the first `train.val_size` records
of a shuffle with a fixed seed (SPLIT_SEED, not the run's seed), so every run of a study, whatever
its seed or learning rate, holds out the same records and trains on the rest. Test sets are never
touched here (harness.study selects on these numbers only; a test proves it).

- loss: the token-mean loss over the validation examples (the training objective on held-out data),
  every train.eval_every optimizer steps and at the end;
- accuracy, on the first train.val_accuracy_items validation records: commonsense records (their
  instruction ends in "Answer format: a/b/c") by the label word with the highest log-likelihood,
  the others by generating and extracting the number (or the letter, for AQuA-style answers).
"""
from __future__ import annotations

import hashlib
import json
import re

import torch

from harness import evaluate, extract, prompts

SPLIT_SEED = 0
FORMAT = re.compile(r"Answer format:\s*([\w/ ]+?)\s*$")


def split(records: list[dict], size: int) -> tuple[list[dict], list[dict], dict]:
    """(training records, validation records, what was held out)."""
    if size <= 0:
        return records, [], {"items": 0}
    from harness.data import to_dataset
    shuffled = to_dataset(records).shuffle(seed=SPLIT_SEED).to_list()
    val, train = shuffled[:size], shuffled[size:]
    digest = hashlib.sha256(json.dumps([r["instruction"] for r in val]).encode()).hexdigest()
    return train, val, {"items": len(val), "split_seed": SPLIT_SEED, "from": "the training set",
                        "instructions_sha256": digest}


@torch.no_grad()
def loss(model, tok, examples: list[dict], batch_size: int, device: torch.device, dtype: torch.dtype) -> float:
    """Token-mean loss over `examples` (sum over every label token / their count)."""
    was_training = model.training
    model.eval()
    from harness.train import IGNORE, Collator
    collate = Collator(tok, packing=False)
    total, items = 0.0, 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    for start in range(0, len(examples), batch_size):
        batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
        n = int((batch["labels"][:, 1:] != IGNORE).sum())  # the loss shifts labels: position 0 is no target
        with autocast:
            out = model(**batch, use_cache=False)
        total += float(out.loss) * n
        items += n
    model.train(was_training)
    return round(total / max(1, items), 5)


def accuracy(model, tok, records: list[dict], style: str, device: torch.device, batch_size: int,
             max_new_tokens: int, precision: torch.dtype | None = None) -> dict:
    """Accuracy (%) on validation records, scored as the harness scores the test sets: each record
    in forwards of its own (its score does not depend on the others or the batch size) at the
    evaluation precision (`precision`, harness.evaluate.evaluation_dtype; None: the model as it is)."""
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
            response = prompts.response_text(g)
            if r["answer"] in tuple("ABCDE"):
                correct += extract.extract_letter(response) == r["answer"]
            else:
                correct += extract.number_correct(extract.extract_number(response), r["answer"])
    n = len(labelled) + len(generated)
    return {"accuracy": round(100.0 * correct / n, 4) if n else None, "n": n,
            "scoring": "label log-likelihood" if not generated else ("generate" if not labelled else "mixed")}
