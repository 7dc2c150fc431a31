"""Cloze scoring of the commonsense sets, as lm-evaluation-harness scores multiple-choice tasks.

Each answer option's *text* is scored as the continuation of the set's standard zero-shot prompt
(the items: harness.tasks.cloze_prompts). acc picks the option with the highest log-likelihood;
acc_norm divides each by the option's length in characters first (lm-eval's acc_norm). This
measures what a model knows, where label-word scoring ("the correct answer is answer2",
eval.scoring=label) measures whether it learned LLM-Adapters' answer format.

Tokenisation follows lm-eval's _encode_pair: context and continuation are encoded together and
split at the length of the context's own encoding (trailing spaces of the context move to the
continuation); the model sees the context's own tokens followed by the continuation's.
tests/test_cloze.py checks the log-likelihoods against lm-eval's HFLM.
"""
from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from harness.tasks.cloze_prompts import ClozeItem


# ---- the engine: lm-eval's loglikelihood ------------------------------------------------------

def encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's HFLM._encode_pair for a causal model (the tokenizer's default special tokens)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tok.encode(context + continuation)
    context_enc = tok.encode(context)
    return context_enc, whole[len(context_enc):]


def _prompt_tokens(model) -> int:
    """Virtual tokens a prompt-learning model (peft) puts before the input, which its logits include:
    prompt tuning's and p-tuning's embeddings; prefix tuning's live only in the KV cache (no logits)."""
    cfg = getattr(model, "active_peft_config", None)
    if not getattr(cfg, "is_prompt_learning", False) or cfg.peft_type == "PREFIX_TUNING":
        return 0
    return int(getattr(cfg, "num_virtual_tokens", 0) or 0)


@torch.no_grad()
def loglikelihoods(model, tok, pairs: list[tuple[str, str]], batch_size: int, device: torch.device,
                   progress=None, groups: list[int] | None = None) -> list[tuple[float, bool]]:
    """(sum of log P(continuation tokens | context), whether they are the greedy tokens) per pair.

    Batches are right-padded (positions do not move); only the positions that predict continuation
    tokens go through the output head and log_softmax (in fp32). `groups`: how many consecutive
    pairs belong to each item (its options); given, each item's pairs are one batch of their own
    and `batch_size` is not used, so an item's log-likelihoods are the same bits whatever else is
    scored, in bf16 too (harness.pipeline.evaluate). Without: length-sorted batches of `batch_size` pairs
    across items, whose padded width and shape, and so in bf16 whose results, depend on the
    neighbours."""
    encoded = [encode_pair(tok, c, x) for c, x in pairs]
    seqs = [(ctx + cont)[:-1] for ctx, cont in encoded]  # the input: every token but the last
    if groups is not None:
        if sum(groups) != len(pairs):
            raise ValueError(f"groups cover {sum(groups)} pairs, not {len(pairs)}")
        ends = list(itertools.accumulate(groups))
        batches = [list(range(end - n, end)) for end, n in zip(ends, groups) if n]
    else:
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    virtual = _prompt_tokens(model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
    for idx in batches:
        width = max(len(seqs[i]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(idx):
            ids[row, :len(seqs[i])] = torch.tensor(seqs[i])
            mask[row, :len(seqs[i])] = 1
        # the first position any row needs: its input length minus its continuation length
        lo = min(len(seqs[i]) - len(encoded[i][1]) for i in idx)
        keep = torch.arange(virtual + lo, virtual + width, device=device)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), logits_to_keep=keep).logits
        for i, result in zip(idx, _continuation_scores(logits, [encoded[i][1] for i in idx],
                                                        [len(seqs[i]) - lo for i in idx])):
            out[i] = result
        if progress is not None:
            progress(len(idx))
    return out


def _continuation_scores(logits: torch.Tensor, continuations: list[list[int]],
                         ends: list[int]) -> list[tuple[float, bool]]:
    """Each row's continuation log-likelihood and greedy match, for the whole batch at once: one
    log_softmax (fp32) over every row's continuation positions and one read-back to the host, where
    a loop per row would synchronise twice per request (on a GPU that bounds the speed)."""
    width = max(len(c) for c in continuations)
    rows = len(continuations)
    positions = torch.zeros((rows, width), dtype=torch.long)
    targets = torch.zeros((rows, width), dtype=torch.long)
    valid = torch.zeros((rows, width), dtype=torch.bool)
    for row, (cont, end) in enumerate(zip(continuations, ends)):
        positions[row, :len(cont)] = torch.arange(end - len(cont), end)
        targets[row, :len(cont)] = torch.tensor(cont)
        valid[row, :len(cont)] = True
    device = logits.device
    positions, targets, valid = positions.to(device), targets.to(device), valid.to(device)
    picked = logits[torch.arange(rows, device=device)[:, None], positions]  # rows x width x vocab
    logp = F.log_softmax(picked.float(), dim=-1)
    token_ll = logp.gather(-1, targets[..., None]).squeeze(-1).cpu()  # the one read-back
    greedy = ((logp.argmax(-1) == targets) | ~valid).all(-1).tolist()
    # each row summed over exactly its own tokens, as lm-eval sums a request (same order, same bits)
    return [(float(token_ll[row, :len(cont)].sum()), greedy[row]) for row, cont in enumerate(continuations)]


# ---- metrics ----------------------------------------------------------------------------------

def per_item(results: list[tuple[float, bool]], items: list[ClozeItem]) -> list[list[float]]:
    """The flat (loglikelihood, greedy) results of all options, regrouped per item."""
    out, k = [], 0
    for it in items:
        out.append([ll for ll, _ in results[k:k + len(it.choices)]])
        k += len(it.choices)
    return out


def predictions(items: list[ClozeItem], lls: list[list[float]]) -> list[dict]:
    """acc and acc_norm decisions per item, with lm-eval's tie-breaking (the first maximum)."""
    rows = []
    for it, ll in zip(items, lls):
        lengths = [float(len(c)) for c in it.choices]
        pred = max(range(len(ll)), key=lambda j: ll[j])
        pred_norm = max(range(len(ll)), key=lambda j: ll[j] / lengths[j])
        rows.append({"pred_index": pred, "pred_norm_index": pred_norm, "gold_index": it.gold,
                     "correct": pred == it.gold, "correct_norm": pred_norm == it.gold,
                     "option_logliks": [round(x, 5) for x in ll]})
    return rows
