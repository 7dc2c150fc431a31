"""Evaluation: greedy (or beam) generation scored with LLM-Adapters' extraction, and
log-likelihood scoring of the answer options for multiple-choice sets.

**An item's score does not depend on what else is evaluated.** Every generation prompt runs alone
(a batch of one, no padding, KV cache), and every multiple-choice item runs in forwards of its own:
its options together, right-padded to the item's longest (cloze, label scoring). No other item ever
shares a forward, so an item's generated answer, option log-likelihoods and choice are the same
bits pooled with other sets, set by set, in any order and at any eval.batch_size, in bf16 as in
fp32 (tests/test_batch_invariance.py, item by item). Length-sorted batches across items
(`invariant=False`, the former default) are not: which items share a batch decides the padded
width and the batch's shape, and in bf16 that changes results. On CPU torch's SDPA attention kernel
blocks by the padded width; on CUDA cuBLAS picks its kernel by shape; bitsandbytes' LLM.int8 (8-bit
bases) chooses its fp16 outlier columns over every row of the batch, padding included. In the
cpu-study (bf16) 10 of 54 set scores differed between the evaluation pass and the retention pass on
the same weights and items, by up to 10 points. The cost is generation speed:
a batch of one decodes one token per forward for one prompt. Measured with
tools/eval_invariance_cost.py on the 2-core CPU, per item against length-sorted batches of 16:
SmolLM2-135M in fp32, generation 8.3x slower (24 prompts, 32 new tokens: 103 s vs 12.5 s), label
scoring 0.9x, cloze 1.3x; in bf16 (emulated on that CPU) 0.8x, 0.6x, 0.3x: padding cost more than
batching saved; the tiny random model in bf16, 5.8x, 3.0x and 1.2x (docs/tasks-and-scoring.md, "Evaluation").
`invariant=False` (eval.batch_invariant=false) keeps the batched path for the test sets.

**Every method is evaluated at one precision.** `eval.precision` (auto | bf16 | fp32; auto: the
run's compute precision, train.precision as resolved on the device: bf16 on CUDA, fp32 on CPU unless
train.precision says otherwise) sets the dtype of every floating-point parameter while evaluating
(`at_precision`), whatever the method stores: frozen bases kept in bf16 and full fine-tuning's fp32
master weights alike, adapters included. The originals are put back exactly afterwards. The records
say which precision (`eval_info.precision`, each set's `precision`).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import GenerationConfig

from harness import tasks
from harness.pipeline import cloze, measure, prompts
from harness.tasks import cloze_prompts

ANSWER_PREFIX = "the correct answer is "  # the LLM-Adapters commonsense training output


def _is_prompt_learning(model) -> bool:
    """Prompt tuning, p-tuning and prefix tuning (peft): virtual tokens the input does not contain."""
    cfg = getattr(model, "active_peft_config", None)
    return bool(getattr(cfg, "is_prompt_learning", False))


def _generate(model, enc, gen_cfg, tok):
    """Generated token ids only. Prompt-learning methods generate through the base model: peft's own
    generate drops position ids (prompt tuning, p-tuning), so left padding would shift the positions
    of the real tokens and predictions would depend on the batch size; and for prefix tuning it hands
    the prefix over as `past_key_values`, which transformers 5 ignores in favour of its own `cache`.
    Here the virtual tokens lead the attention mask, so position ids (counted from the mask) start
    after them for every row, as in training."""
    if not _is_prompt_learning(model):
        seqs = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                              generation_config=gen_cfg, tokenizer=tok)
        return seqs[:, enc["input_ids"].shape[1]:]
    base = model.get_base_model()
    rows = enc["input_ids"].shape[0]
    virtual = model.active_peft_config.num_virtual_tokens
    mask = torch.cat([torch.ones((rows, virtual), dtype=enc["attention_mask"].dtype, device=enc["input_ids"].device),
                      enc["attention_mask"]], dim=1)
    if model.active_peft_config.peft_type == "PREFIX_TUNING":  # a str enum
        # the prefix is a filled KV cache; generate does not expand a given cache for beams, and every
        # row's prefix is the same, so it is built for rows x beams. Given only the new tokens and a mask
        # over cache + tokens, generate feeds all of them after the cache and returns them before its own.
        cache = model.get_prompt(batch_size=rows * gen_cfg.num_beams)
        seqs = base.generate(input_ids=enc["input_ids"], attention_mask=mask, cache=cache,
                             generation_config=gen_cfg, tokenizer=tok)
        return seqs[:, enc["input_ids"].shape[1]:]
    embeds = base.get_input_embeddings()(enc["input_ids"])
    soft = model.get_prompt(batch_size=rows).to(embeds.dtype)
    # from embeddings alone, generate returns only the new tokens
    return base.generate(inputs_embeds=torch.cat([soft, embeds], dim=1), attention_mask=mask,
                         generation_config=gen_cfg, tokenizer=tok)


def _progress(batches: list[list[int]], total: int, desc: str | None):
    """Yield the batches; on a terminal, a bar counting items with an ETA (none in a log file)."""
    with tqdm(total=total, desc=desc, unit="item", disable=None if desc else True, leave=False,
              dynamic_ncols=True) as bar:
        for idx in batches:
            yield idx
            bar.update(len(idx))


def _sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])  # longest first: OOM shows early
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# ---- precision -------------------------------------------------------------------------------

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def max_new_tokens(cfg, task_default: int | None = None) -> int:
    """Tokens a generation may add: eval.max_new_tokens, else the task family's own length
    (`task_default`, or the run's task.max_new_tokens)."""
    return cfg.eval.max_new_tokens or (task_default if task_default is not None else cfg.task.max_new_tokens)


def evaluation_dtype(precision, train_precision, device: torch.device) -> torch.dtype:
    """eval.precision as a dtype. auto: the run's compute precision (train.precision; its auto is
    bf16 on CUDA, fp32 elsewhere), so every method of a comparison is evaluated alike."""
    p = str(precision)
    if p == "auto":
        p = str(train_precision)
    if p == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if p not in DTYPES:
        raise ValueError(f"precision must be auto, bf16 or fp32, not {precision!r}")
    return DTYPES[p]


def precision_name(model) -> str:
    """The dtype(s) of a model's floating-point parameters: 'bf16', 'fp32' or e.g. 'bf16+fp32'."""
    names = {v: k for k, v in DTYPES.items()}
    found = sorted({names.get(p.dtype, str(p.dtype).replace("torch.", "")) for p in model.parameters()
                    if p.is_floating_point()})
    return "+".join(found) or "none"


@contextmanager
def at_precision(model, dtype: torch.dtype | None):
    """Run the body with every floating-point parameter of `model` in `dtype` (None: as it is), then
    put the original tensors back, bit for bit (they stay referenced, so a down-cast holds both
    copies while it lasts). Buffers keep their dtype: rotary frequencies stay fp32, as in a model
    loaded in bf16, so an fp32 model cast to bf16 is the model a bf16 load gives. Quantised weights
    (bitsandbytes' packed 4-bit, LLM.int8's int8) are not floating point and stay; 4-bit layers
    compute in `dtype` meanwhile (their compute_dtype)."""
    if dtype is None:
        yield
        return
    params, layers = [], []
    try:
        for p in model.parameters():  # shared (tied) parameters come once
            if p.is_floating_point() and p.dtype != dtype:
                params.append((p, p.data))
                p.data = p.data.to(dtype)
        for m in model.modules():
            current = getattr(m, "compute_dtype", None)
            if isinstance(current, torch.dtype) and current != dtype:
                layers.append((m, current))
                m.compute_dtype = dtype
        yield
    finally:
        for p, original in params:
            p.data = original
        for m, current in layers:
            m.compute_dtype = current


@torch.no_grad()
def generate_answers(model, tok, texts: list[str], max_new_tokens: int, batch_size: int, num_beams: int,
                     device: torch.device, desc: str | None = None,
                     invariant: bool = True) -> tuple[list[str], list[int]]:
    """Greedy/beam continuations of `texts` (in input order) and the number of tokens each generated.

    invariant: each prompt alone (a batch of one, no padding; `batch_size` is not used), so its
    continuation is the same whatever else is generated. False: length-sorted batches of
    `batch_size` with left padding (faster; in bf16 a continuation can depend on its batch)."""
    tok.padding_side = "left"
    lengths = [len(ids) for ids in tok(texts)["input_ids"]]
    batches = [[i] for i in range(len(texts))] if invariant else _sorted_batches(lengths, batch_size)
    # Stopping at a second "### Response:" is free: LLM-Adapters' scoring discards everything after
    # it (prompt+generation).split("### Response:")[1]), and models that loop the template stop early.
    gen_cfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams,
                               pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                               bos_token_id=tok.bos_token_id, use_cache=True,
                               stop_strings=[prompts.RESPONSE_MARKER])
    outputs: list[str] = [""] * len(texts)
    n_generated = [0] * len(texts)
    for idx in _progress(batches, len(texts), desc):
        enc = tok([texts[i] for i in idx], return_tensors="pt", padding=True).to(device)
        new = _generate(model, enc, gen_cfg, tok)
        for row, i in enumerate(idx):
            tokens = new[row].tolist()
            if tok.eos_token_id in tokens:
                tokens = tokens[:tokens.index(tok.eos_token_id) + 1]
            while tokens and tokens[-1] == tok.pad_token_id != tok.eos_token_id:  # finished early
                tokens.pop()
            n_generated[i] = len(tokens)
            outputs[i] = tok.decode(tokens, skip_special_tokens=True)
    return outputs, n_generated


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    out = []
    for toks in zip(*seqs):
        if any(t != toks[0] for t in toks):
            break
        out.append(toks[0])
    return out


@torch.no_grad()
def option_logliks(model, tok, contexts: list[str], options: list[list[str]], batch_size: int,
                   device: torch.device, desc: str | None = None, invariant: bool = True) -> list[list[float]]:
    """log P(option | context) summed over the option's tokens, for every option of every item.

    Context and option are tokenised separately and concatenated. When an item's options differ
    only in their last token (answer1/answer2/..., true/false), one forward pass over context +
    shared prefix scores them all; otherwise each option gets its own sequence. Right padding keeps
    positions independent of the batch (prompt tuning ignores position ids).

    invariant: each item's sequences form a batch of their own (`batch_size` is not used), so its
    scores are the same whatever else is scored. False: length-sorted batches of `batch_size`
    sequences across items (in bf16 a score can depend on its batch).
    """
    tok.padding_side = "right"
    ctx_ids = tok(contexts)["input_ids"]
    requests = []  # (item, option indices, token sequence, scored tail length, final-token candidates)
    for i, opts in enumerate(options):
        conts = tok(opts, add_special_tokens=False)["input_ids"]
        shared = _common_prefix(conts)
        if all(len(c) == len(shared) + 1 for c in conts):
            requests.append((i, list(range(len(opts))), ctx_ids[i] + shared, len(shared), [c[-1] for c in conts]))
        else:
            requests += [(i, [j], ctx_ids[i] + c, len(c), None) for j, c in enumerate(conts)]
    scores = [[0.0] * len(o) for o in options]
    if invariant:
        batches = {}
        for k, r in enumerate(requests):
            batches.setdefault(r[0], []).append(k)
        batches = list(batches.values())
    else:
        batches = _sorted_batches([len(r[2]) for r in requests], batch_size)
    for idx in _progress(batches, len(requests), desc):
        width = max(len(requests[k][2]) for k in idx)
        ids = torch.full((len(idx), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, k in enumerate(idx):
            ids[row, :len(requests[k][2])] = torch.tensor(requests[k][2])
            mask[row, :len(requests[k][2])] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logits = logits[:, -width:]  # prompt tuning prepends virtual-token positions
        for row, k in enumerate(idx):
            item, opt_idx, seq, tail, finals = requests[k]
            end = len(seq)
            # only the positions that predict scored tokens go through log_softmax (vocab is large)
            # position p predicts token p+1; with final candidates, the last position is scored too
            hi = end - 1 if finals is None else end
            logp = F.log_softmax(logits[row, end - tail - 1:hi].float(), dim=-1)
            targets = torch.tensor(seq[end - tail:], device=logp.device)
            base = float(logp[:tail].gather(1, targets[:, None]).sum()) if tail else 0.0
            if finals is None:
                scores[item][opt_idx[0]] = base
            else:
                for j, t in zip(opt_idx, finals):
                    scores[item][j] = base + float(logp[tail, t])
    return scores


def _generate_rows(model, tok, owners, texts, c) -> tuple[list[dict], int]:
    """Generate, then extract the answer as LLM-Adapters does."""
    gens, n_tokens = generate_answers(model, tok, texts, c["max_new_tokens"], c["batch_size"], c["num_beams"],
                                      c["device"], desc="eval", invariant=c["invariant"])
    rows = []
    for i, ((ts, r), g) in enumerate(zip(owners, gens)):
        response = prompts.response_text(g)
        pred = tasks.extract(ts, response)
        rows.append({"prompt": texts[i], "generation": g, "response": response, "pred": pred, "gold": r["answer"],
                     "correct": tasks.is_correct(ts, pred, r["answer"]), "parsed": pred is not None,
                     "generated_tokens": n_tokens[i]})
    return rows, sum(n_tokens)


def _label_rows(model, tok, owners, texts, c) -> tuple[list[dict], int]:
    """The label word with the highest log-likelihood after the LLM-Adapters prompt and
    "the correct answer is " (what a model trained on that format prefers, not what it knows)."""
    opts = [tasks.options(ts, r["instruction"]) for ts, r in owners]
    scores = option_logliks(model, tok, texts, [[ANSWER_PREFIX + o for o in os_] for os_ in opts],
                            c["batch_size"], c["device"], desc="eval", invariant=c["invariant"])
    rows = []
    for i, (ts, r) in enumerate(owners):
        pred = opts[i][max(range(len(opts[i])), key=lambda j: scores[i][j])]  # first of equal scores
        rows.append({"prompt": texts[i], "generation": None, "pred": pred, "gold": r["answer"],
                     "correct": tasks.is_correct(ts, pred, r["answer"]), "parsed": True,
                     "option_scores": dict(zip(opts[i], (round(x, 4) for x in scores[i])))})
    return rows, 0


def _cloze_rows(model, tok, owners, texts, c) -> tuple[list[dict], int]:
    """Each option's text as the continuation of the set's standard zero-shot prompt (harness.pipeline.cloze)."""
    items = [cloze_prompts.item(ts.name, r) for ts, r in owners]
    pairs = [(ctx, cont) for it in items for ctx, cont in zip(it.contexts, it.continuations)]
    with tqdm(total=len(pairs), desc="eval (cloze)", unit="option", disable=None, leave=False) as bar:
        lls = cloze.loglikelihoods(model, tok, pairs, c["batch_size"], c["device"], progress=bar.update,
                                   groups=[len(it.choices) for it in items] if c["invariant"] else None)
    rows = []
    for (ts, r), it, decided in zip(owners, items, cloze.predictions(items, cloze.per_item(lls, items))):
        rows.append({"prompt": it.contexts[0], "generation": None, "pred": it.labels[decided["pred_index"]],
                     "gold": r["answer"], "parsed": True, **decided})
    return rows, 0


SCORERS = {"generate": _generate_rows, "label": _label_rows, "cloze": _cloze_rows}


def evaluate_sets(model, tok, sets: list[tuple[tasks.TestSet, list[dict]]], scoring: str, max_new_tokens: int,
                  batch_size: int, num_beams: int, style: str, device: torch.device,
                  precision: torch.dtype | None = None, invariant: bool = True) -> tuple[dict, dict, dict]:
    """Metrics and per-item predictions of several test sets, and the timing of the whole pass.

    The sets are evaluated in one pass; an item's score does not depend on the other items, the
    other sets or the batch size (module docstring; tests/test_batch_invariance.py), so a set scores
    the same evaluated alone, pooled, or in the retention pass. Timing is for the pass (questions/s
    over every item), not per set. `precision`: the dtype every floating-point parameter has while
    evaluating (`evaluation_dtype`; None: the model as it is); recorded as `precision`. Scorings:
    generate (LLM-Adapters' extraction), label (label-word log-likelihood), cloze (lm-eval style).
    """
    owners = [(ts, r) for ts, records in sets for r in records]
    texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for _, r in owners]
    with at_precision(model, precision):
        used = precision_name(model)
        t0 = measure.clock(device)
        rows, n_generated = SCORERS[str(scoring)](model, tok, owners, texts, dict(
            max_new_tokens=max_new_tokens, batch_size=batch_size, num_beams=num_beams, device=device,
            invariant=invariant))
        seconds = measure.clock(device) - t0
    decoding = ("greedy" if num_beams == 1 else f"beam{num_beams}") if scoring == "generate" else None
    metrics, predictions, start = {}, {}, 0
    for ts, records in sets:
        mine = rows[start:start + len(records)]
        start += len(records)
        for k, row in enumerate(mine):
            row["index"] = k
        n, correct, failures = len(mine), sum(r["correct"] for r in mine), sum(not r["parsed"] for r in mine)
        metrics[ts.name] = {"accuracy": round(100.0 * correct / n, 4), "correct": correct, "n": n,
                            "parse_failures": failures, "parse_failure_rate": round(failures / n, 4),
                            "scoring": str(scoring), "decoding": decoding, "precision": used}
        if scoring == "cloze":
            metrics[ts.name]["accuracy_norm"] = (round(100.0 * sum(r["correct_norm"] for r in mine) / n, 4)
                                                 if ts.name in cloze_prompts.HAS_ACC_NORM else None)
            metrics[ts.name]["prompt_lost"] = cloze_prompts.LOST.get(ts.name)
        predictions[ts.name] = mine
    timing = {"seconds": round(seconds, 4), "questions": len(rows), "precision": used,
              "batching": "per item" if invariant else f"length-sorted batches of {batch_size}",
              "questions_per_second": round(len(rows) / seconds, 4) if seconds else None,
              "generated_tokens": n_generated,
              "generated_tokens_per_second": round(n_generated / seconds, 2) if seconds and n_generated else None}
    return metrics, predictions, timing


def evaluate_set(model, tok, ts: tasks.TestSet, records: list[dict], scoring: str, max_new_tokens: int,
                 batch_size: int, num_beams: int, style: str, device: torch.device,
                 precision: torch.dtype | None = None, invariant: bool = True) -> tuple[dict, list[dict]]:
    """Metrics (with the timing) and per-item predictions of one test set."""
    metrics, predictions, timing = evaluate_sets(model, tok, [(ts, records)], scoring, max_new_tokens, batch_size,
                                                 num_beams, style, device, precision, invariant)
    return {**metrics[ts.name], **{k: timing[k] for k in ("seconds", "questions_per_second", "generated_tokens",
                                                            "generated_tokens_per_second")}}, predictions[ts.name]
