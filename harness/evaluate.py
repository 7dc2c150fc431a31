"""Evaluation: batched greedy (or beam) generation scored with LLM-Adapters' extraction, and
log-likelihood scoring of the answer options for multiple-choice sets.

Generation is batched with left padding over length-sorted prompts and uses the KV cache;
predictions do not depend on the batch size (tests check batch 1 vs 16 in fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import GenerationConfig

from harness import measure, prompts, tasks

ANSWER_PREFIX = "the correct answer is "  # the LLM-Adapters commonsense training output


def _sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first: OOM shows early
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


@torch.no_grad()
def generate_answers(model, tok, texts: list[str], max_new_tokens: int, batch_size: int, num_beams: int,
                     device: torch.device) -> tuple[list[str], list[int]]:
    """Greedy/beam continuations of `texts` (in input order) and the number of tokens each generated."""
    tok.padding_side = "left"
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.bos_token_id, use_cache=True)
    outputs: list[str] = [""] * len(texts)
    n_generated = [0] * len(texts)
    for idx in _sorted_batches(lengths, batch_size):
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        seqs = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                              generation_config=gen_cfg)
        new = seqs[:, enc["input_ids"].shape[1]:]
        for row, i in enumerate(idx):
            tokens = new[row].tolist()
            if tok.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tok.eos_token_id) + 1]
            n_generated[i] = len(tokens)
            outputs[i] = tok.decode(tokens, skip_special_tokens=True)
    return outputs, n_generated


@torch.no_grad()
def option_logliks(model, tok, contexts: list[str], continuations: list[str], batch_size: int,
                   device: torch.device) -> list[float]:
    """Sum of log-probabilities of each continuation given its context (separately tokenised,
    concatenated; right padding)."""
    tok.padding_side = "right"
    ctx_ids = tok(contexts)["input_ids"]
    cont_ids = tok(continuations, add_special_tokens=False)["input_ids"]
    seqs = [c + k for c, k in zip(ctx_ids, cont_ids)]
    scores = [0.0] * len(seqs)
    for idx in _sorted_batches([len(s) for s in seqs], batch_size):
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logits = logits[:, -width:].float()  # prompt tuning prepends virtual-token positions
        logp = F.log_softmax(logits, dim=-1)
        for row, i in enumerate(idx):
            start, end = len(ctx_ids[i]), len(seqs[i])
            targets = torch.tensor(seqs[i][start:end], device=logp.device)
            scores[i] = float(logp[row, start - 1:end - 1].gather(1, targets[:, None]).sum())
    return scores


def evaluate_set(model, tok, ts: tasks.TestSet, records: list[dict], scoring: str, max_new_tokens: int,
                 batch_size: int, num_beams: int, style: str, device: torch.device) -> tuple[dict, list[dict]]:
    """Metrics and per-item predictions for one test set."""
    texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for r in records]
    t0 = measure.clock(device)
    rows = []
    if scoring == "loglik":
        ctxs, conts, owners = [], [], []
        for i, r in enumerate(records):
            for opt in tasks.options(ts, r["instruction"]):
                ctxs.append(texts[i])
                conts.append(ANSWER_PREFIX + opt)
                owners.append((i, opt))
        scores = option_logliks(model, tok, ctxs, conts, batch_size, device)
        best: dict[int, tuple[float, str]] = {}
        for (i, opt), s in zip(owners, scores):
            if i not in best or s > best[i][0]:
                best[i] = (s, opt)
        n_generated = 0
        for i, r in enumerate(records):
            pred = best[i][1]
            rows.append({"index": i, "prompt": texts[i], "generation": None, "pred": pred, "gold": r["answer"],
                         "correct": tasks.is_correct(ts, pred, r["answer"]), "parsed": True,
                         "option_scores": {o: round(s, 4) for (j, o), s in zip(owners, scores) if j == i}})
    else:
        gens, n_tokens = generate_answers(model, tok, texts, max_new_tokens, batch_size, num_beams, device)
        n_generated = sum(n_tokens)
        for i, (r, g) in enumerate(zip(records, gens)):
            response = prompts.response_text(g)
            pred = tasks.extract(ts, response)
            rows.append({"index": i, "prompt": texts[i], "generation": g, "response": response, "pred": pred,
                         "gold": r["answer"], "correct": tasks.is_correct(ts, pred, r["answer"]),
                         "parsed": pred is not None, "generated_tokens": n_tokens[i]})
    seconds = measure.clock(device) - t0
    n = len(rows)
    correct = sum(r["correct"] for r in rows)
    failures = sum(not r["parsed"] for r in rows)
    metrics = {"accuracy": round(100.0 * correct / n, 4), "correct": correct, "n": n,
               "parse_failures": failures, "parse_failure_rate": round(failures / n, 4), "scoring": scoring,
               "decoding": None if scoring == "loglik" else ("greedy" if num_beams == 1 else f"beam{num_beams}"),
               "seconds": round(seconds, 4), "questions_per_second": round(n / seconds, 4) if seconds else None,
               "generated_tokens": n_generated,
               "generated_tokens_per_second": round(n_generated / seconds, 2) if seconds and n_generated else None}
    return metrics, rows
