"""Cloze scoring of the commonsense sets, as lm-evaluation-harness scores multiple-choice tasks.

Each answer option's *text* is scored as the continuation of the set's standard zero-shot prompt
(lm-eval's task templates: ARC "Question: {q}\\nAnswer:" + " {choice}", HellaSwag's preprocessed
"{label}: {ctx}" + " {ending}", WinoGrande's partial scoring, ...). acc picks the option with the
highest log-likelihood; acc_norm divides each by the option's length in characters first (lm-eval's
acc_norm). This measures what a model knows, where label-word scoring ("the correct answer is
answer2", eval.scoring=label) measures whether it learned LLM-Adapters' answer format.

The questions, options and gold come from the shipped LLM-Adapters files; where that format lost
something lm-eval's prompt uses, `LOST` says what (records and docs/tasks-and-scoring.md carry it):
BoolQ has no passage; HellaSwag's ctx_b is not capitalised (the two halves of its context are not
told apart) and the file is the approximate rebuild. Tokenisation follows lm-eval's _encode_pair:
context and continuation are encoded together and split at the length of the context's own
encoding (trailing spaces of the context move to the continuation); the model sees the context's
own tokens followed by the continuation's. tests/test_cloze.py checks the templates against
lm-eval's task configs and the log-likelihoods against lm-eval's HFLM.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SETS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge", "openbookqa")
# lm-eval's metric_list per task: acc_norm only where the task reports it
HAS_ACC_NORM = {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}
# sets shown but left out of a cloze average, and why: the prompt lost what lm-eval's uses, so the
# score measures something else (without its passage, BoolQ is a guess from the question: the base
# model's 38.0% is about what always answering "no" scores, 37.8% of the answers being "false")
NOT_AVERAGED = {"boolq": "its prompt lost the passage (LLM-Adapters' file has none), so it measures a guess "
                         "from the question alone"}
LOST = {
    "boolq": "no passage: LLM-Adapters' BoolQ file holds the question only, so the prompt is lm-eval's "
             "'{passage}\\nQuestion: {question}?\\nAnswer:' without its passage",
    "hellaswag": "ctx_b is not capitalised (LLM-Adapters joined ctx_a and ctx_b), and the shipped file is "
                 "an approximate rebuild of LLM-Adapters' HellaSwag",
}


def standard_metric(name: str) -> str:
    """The set's standard lm-eval metric: acc_norm where the task reports it, else acc. Records keep
    both (eval.<set>.accuracy and accuracy_norm; predictions' correct and correct_norm)."""
    return "acc_norm" if name in HAS_ACC_NORM else "acc"


@dataclass(frozen=True)
class ClozeItem:
    contexts: tuple  # one per option (WinoGrande: the sentence up to the blank, filled with the option)
    continuations: tuple  # one per option (WinoGrande: the shared rest of the sentence)
    choices: tuple  # lm-eval's doc_to_choice: what acc_norm divides by
    gold: int
    labels: tuple  # LLM-Adapters' label word of each option (what records and predictions say)


# ---- the LLM-Adapters files -> lm-eval documents ------------------------------------------------

def _between(text: str, start: str, end: str) -> str:
    i = text.index(start) + len(start)
    return text[i:text.index(end, i)]


def _options(segment: str, word: str) -> list[str]:
    """'Answer1: a Answer2: b' -> ['a', 'b'] (numbered in order, as LLM-Adapters writes them)."""
    parts = re.split(rf"(?:^|\s+){word}(\d+): ", segment.strip())
    numbers, texts = parts[1::2], parts[2::2]
    if numbers != [str(i) for i in range(1, len(numbers) + 1)]:
        raise ValueError(f"options not numbered 1..n: {numbers}")
    return [t.strip() for t in texts]


def _gold(answer: str, word: str) -> int:
    return int(answer[len(word):]) - 1


def doc(name: str, rec: dict) -> dict:
    """The lm-eval (Hugging Face dataset) document a shipped record stands for."""
    ins, answer = rec["instruction"], rec["answer"]
    if name == "boolq":
        q = _between(ins, "question: ", "\n\nAnswer format")
        return {"question": q[:-1] if q.endswith("?") else q, "passage": None, "label": int(answer == "true")}
    if name == "piqa":
        goal = _between(ins, "solution to the question: ", "\n\nSolution1: ")
        sol1 = _between(ins, "\n\nSolution1: ", "\n\nSolution2: ")
        sol2 = _between(ins, "\n\nSolution2: ", "\n\nAnswer format")
        return {"goal": goal, "sol1": sol1, "sol2": sol2, "label": _gold(answer, "solution")}
    if name == "winogrande":
        sentence = _between(ins, "complete the given sentence: ", "\n\nOption1: ")
        o1 = _between(ins, "\n\nOption1: ", " Option2: ")
        o2 = _between(ins, " Option2: ", " Answer format")
        return {"sentence": sentence, "option1": o1, "option2": o2, "answer": answer[-1]}
    if name == "hellaswag":
        ctx = _between(ins, "complete the given sentence: ", "\n\nEnding1: ")
        endings = _options(_between(ins, "\n\n", "\n\nAnswer format"), "Ending")
        return {"ctx": ctx, "endings": endings, "label": _gold(answer, "ending")}
    question = _between(ins, "to the question: ", "\n\nAnswer1: ")
    options = _options(_between(ins, question + "\n\n", "\n\nAnswer format"), "Answer")
    if name == "siqa":  # LLM-Adapters wrote "{context} {question}": lm-eval's prompt joins them the same way
        return {"context_question": question, "answers": options, "label": _gold(answer, "answer")}
    return {"question": question, "choices": {"text": options}, "label": _gold(answer, "answer")}


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's hellaswag/utils.py preprocess (WikiHow markers)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def item(name: str, rec: dict) -> ClozeItem:
    """lm-eval's prompt for one record: contexts, continuations (with its " " target delimiter), gold."""
    d = doc(name, rec)
    if name == "winogrande":  # partial scoring: the option filled in, the shared remainder scored
        blank = d["sentence"].index("_")
        contexts = tuple(d["sentence"][:blank] + o for o in (d["option1"], d["option2"]))
        rest = " " + d["sentence"][blank + 1:].strip()
        return ClozeItem(contexts, (rest, rest), contexts, int(d["answer"]) - 1, ("option1", "option2"))
    if name == "boolq":
        context, choices = f"Question: {d['question']}?\nAnswer:", ("no", "yes")
    elif name == "piqa":
        context, choices = f"Question: {d['goal']}\nAnswer:", (d["sol1"], d["sol2"])
    elif name == "siqa":
        context, choices = f"Q: {d['context_question']}\nA:", tuple(d["answers"])
    elif name == "hellaswag":
        context, choices = hellaswag_preprocess(d["ctx"]), tuple(hellaswag_preprocess(e) for e in d["endings"])
    elif name == "openbookqa":
        context, choices = d["question"], tuple(d["choices"]["text"])
    else:  # arc_easy, arc_challenge
        context, choices = f"Question: {d['question']}\nAnswer:", tuple(d["choices"]["text"])
    word = {"boolq": None, "piqa": "solution", "hellaswag": "ending"}.get(name, "answer")
    labels = ("false", "true") if word is None else tuple(f"{word}{k + 1}" for k in range(len(choices)))
    return ClozeItem((context,) * len(choices), tuple(" " + c for c in choices), choices, d["label"], labels)


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
