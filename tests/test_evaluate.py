"""Evaluation specifications: batch size does not change predictions; grouped option scoring
equals scoring each option on its own."""
from __future__ import annotations

import torch

from harness import data, evaluate, prompts, tasks


def _prompts(name: str, n: int) -> list[str]:
    records, _ = data.shipped(f"test/{name}")
    return [prompts.eval_prompt(r["instruction"], r["input"]) for r in records[:n]]


def test_greedy_predictions_do_not_depend_on_batch_size(tiny):
    model, tok = tiny
    texts = _prompts("gsm8k", 8) + _prompts("boolq", 8)  # mixed lengths: real left padding
    one, n1 = evaluate.generate_answers(model, tok, texts, 24, 1, 1, torch.device("cpu"))
    many, n16 = evaluate.generate_answers(model, tok, texts, 24, 16, 1, torch.device("cpu"))
    assert one == many and n1 == n16
    assert len(set(one)) > 1  # the prompts really produce different continuations


def test_grouped_option_scoring_equals_per_option(tiny):
    model, tok = tiny
    records, _ = data.shipped("test/arc_challenge")
    records = records[:6]
    ts = tasks.get_family("commonsense").test_set("arc_challenge")
    ctxs = [prompts.eval_prompt(r["instruction"]) for r in records]
    opts = [[evaluate.ANSWER_PREFIX + o for o in tasks.options(ts, r["instruction"])] for r in records]
    grouped = evaluate.option_logliks(model, tok, ctxs, opts, 4, torch.device("cpu"))
    # reference: every option as its own sequence, batch 1, full log-softmax
    for i, (ctx, item_opts) in enumerate(zip(ctxs, opts)):
        for j, opt in enumerate(item_opts):
            c = tok(ctx)["input_ids"]
            k = tok(opt, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([c + k])
            logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            ref = sum(float(logp[len(c) + t - 1, k[t]]) for t in range(len(k)))
            assert abs(grouped[i][j] - ref) < 1e-3, (i, j, grouped[i][j], ref)
