"""Evaluation comparison: LLM-Adapters' evaluate.py decoding against the harness's, same questions.

Rows: the reference, LLM-Adapters' evaluate.py (verbatim in what it computes): one prompt at a time, no attention
mask, 4-beam search, max_new_tokens, return_dict_in_generate with output_scores, the whole sequence
decoded and split at "### Response:". Their temperature/top_p/top_k are left out: without
do_sample they change nothing, and transformers warns about them on every call.
hf_batched: plain Hugging Face batched greedy generation in the questions' order. harness:
`harness.pipeline.evaluate.generate_answers` (length-sorted batches, left padding, KV cache, per-row stop at a
repeated response marker), and the same in bf16 (on CPUs with AMX / AVX512-BF16, and on GPUs).
Both score with the harness's extraction, so an accuracy difference comes from decoding alone.
Both decode the base model (method=none): the same weights for both sides, whatever was trained.
"""
from __future__ import annotations

import torch
from transformers import GenerationConfig

from harness import tasks
from harness.bench import TARGET_SUITE_SECONDS
from harness.pipeline import evaluate, measure, prompts

REFERENCE_BEAMS = 4


@torch.no_grad()
def reference_responses(model, tok, texts: list[str], max_new_tokens: int,
                        device: torch.device) -> tuple[list[str], list[int]]:
    gen_cfg = GenerationConfig(num_beams=REFERENCE_BEAMS, max_new_tokens=max_new_tokens,
                               return_dict_in_generate=True, output_scores=True)
    responses, n_generated = [], []
    for text in texts:
        input_ids = tok(text, return_tensors="pt")["input_ids"].to(device)
        out = model.generate(input_ids=input_ids, generation_config=gen_cfg)
        seq = out.sequences[0]
        responses.append(tok.decode(seq).split(prompts.RESPONSE_MARKER)[1].strip())
        n_generated.append(len(seq) - input_ids.shape[1])
    return responses, n_generated


def _timed(device, fn):
    memory = measure.PhaseMemory(device).start()
    t0 = measure.clock(device)
    result = fn()
    seconds = measure.clock(device) - t0
    return result, seconds, memory.read().get(measure.peak_key(device))


@torch.no_grad()
def hf_batched_responses(model, tok, texts: list[str], max_new_tokens: int, batch_size: int,
                         device: torch.device) -> tuple[list[str], list[int]]:
    """Plain Hugging Face batched greedy generation: batches in the questions' order, left padding,
    every row decoded for max_new_tokens unless EOS (no length sorting, no stop strings)."""
    tok.padding_side = "left"
    responses, n_generated = [], []
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True).to(device)
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
        for row in out[:, enc["input_ids"].shape[1]:]:
            text = tok.decode(row, skip_special_tokens=True)
            responses.append(prompts.response_text(text))
            n_generated.append(int((row != tok.pad_token_id).sum()))
    return responses, n_generated


def _side(ts, records, responses, n_generated, seconds, peak, **extra) -> dict:
    n = len(records)
    correct = sum(tasks.is_correct(ts, tasks.extract(ts, r), rec["answer"]) for r, rec in zip(responses, records))
    return {**extra, "seconds": round(seconds, 4), "questions_per_second": round(n / seconds, 4),
            "accuracy": round(100.0 * correct / n, 2), "generated_tokens": sum(n_generated), "peak_gib": peak,
            "predictions": [tasks.extract(ts, r) for r in responses]}


def compare(models_by_precision: dict, tok, ts: tasks.TestSet, records: list[dict], cfg, max_new_tokens: int,
            device: torch.device) -> dict:
    """Every decoding of `records` (the first N questions of `ts`): LLM-Adapters' reference, plain HF
    batched greedy, the harness's per item (what runs do: answers independent of the batch) and
    batched (eval.batch_invariant=false), and the same in bf16 when a bf16 model is given."""
    style, bs, beams = cfg.train.prompt_style, cfg.eval.batch_size, cfg.eval.num_beams
    texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for r in records]
    model = models_by_precision["fp32"] if "fp32" in models_by_precision else next(iter(models_by_precision.values()))
    model.eval()
    # untimed warm-up of every path (CUDA context, kernels, stop-string tables)
    reference_responses(model, tok, texts[:1], 2, device)
    hf_batched_responses(model, tok, texts[:1], 2, bs, device)
    evaluate.generate_answers(model, tok, texts[:1], 2, bs, beams, device)
    sides = {}
    (resp, n), sec, peak = _timed(device, lambda: reference_responses(model, tok, texts, max_new_tokens, device))
    sides["reference"] = _side(ts, records, resp, n, sec, peak, decoding=f"beam{REFERENCE_BEAMS}", batch_size=1)
    (resp, n), sec, peak = _timed(device, lambda: hf_batched_responses(model, tok, texts, max_new_tokens, bs, device))
    sides["hf_batched"] = _side(ts, records, resp, n, sec, peak, decoding="greedy", batch_size=bs)
    for precision, m in models_by_precision.items():
        m.eval()
        suffix = "" if precision == "fp32" or len(models_by_precision) == 1 else f"+{precision}"
        # per item: what a run does (batch-invariant answers); batched: eval.batch_invariant=false
        for invariant, name in ((True, f"harness{suffix}"), (False, f"harness_batched{suffix}")):
            evaluate.generate_answers(m, tok, texts[:1], 2, bs, beams, device, invariant=invariant)
            (gens, n), sec, peak = _timed(device, lambda: evaluate.generate_answers(
                m, tok, texts, max_new_tokens, bs, beams, device, invariant=invariant))
            sides[name] = _side(ts, records, [prompts.response_text(g) for g in gens], n, sec, peak,
                                decoding="greedy" if beams == 1 else f"beam{beams}",
                                batch_size=1 if invariant else bs, precision=precision)
    ref = sides["reference"]
    for side in sides.values():
        side["speedup"] = round(ref["seconds"] / side["seconds"], 3)
        side["same_predictions_as_reference"] = sum(a == b for a, b in zip(side["predictions"], ref["predictions"]))
    return {"test_set": ts.name, "questions": len(records), "max_new_tokens": max_new_tokens,
            "model": "base (method=none)", "sides": sides}


def suite(model, tok, cfg, device: torch.device) -> dict:
    """The harness's evaluation of every test set of every task family (docs/benchmark.md's 15-set target),
    with the run config's eval settings (eval.limit, eval.batch_size, eval.scoring...)."""
    tasks.all_test_sets()  # imports every family module
    loaded = []
    for family in tasks.FAMILIES.values():
        for ts in family.test_sets.values():
            records, _ = tasks.load_test_set(ts, cfg.cache_dir, cfg.eval.hellaswag)
            scoring = cfg.eval.scoring if ts.multiple_choice else "generate"
            loaded.append((ts, tasks.select(records, cfg.eval.limit), scoring,
                           evaluate.max_new_tokens(cfg, family.max_new_tokens)))
    model.eval()
    sets, t_all = {}, measure.clock(device)
    for ts, records, scoring, max_new in loaded:
        metrics, _ = evaluate.evaluate_set(model, tok, ts, records, scoring, max_new, cfg.eval.batch_size,
                                           cfg.eval.num_beams, cfg.train.prompt_style, device)
        sets[ts.name] = {k: metrics[k] for k in ("n", "accuracy", "seconds", "questions_per_second", "scoring")}
    total = measure.clock(device) - t_all
    questions = sum(s["n"] for s in sets.values())
    complete = cfg.eval.limit == 0
    return {"sets": sets, "test_sets": len(sets), "questions": questions, "seconds": round(total, 3),
            "questions_per_second": round(questions / total, 3), "complete": complete,
            "target_seconds": TARGET_SUITE_SECONDS,
            "meets_target": (total <= TARGET_SUITE_SECONDS) if complete else None}


def cloze_vs_lm_eval(model, tok, cfg, device: torch.device, per_set: int) -> dict:
    """The harness's cloze scoring against lm-evaluation-harness's HFLM (its log-likelihood path,
    the peer a user would reach for) on the same requests and weights: the first `per_set` items of
    each commonsense set, every option one (context, continuation) request. Both are given the same
    batch size; lm-eval sorts requests by length and caches shared contexts itself."""
    from harness.pipeline import cloze
    from harness.tasks import cloze_prompts
    requests, items = [], []
    for name in cloze_prompts.SETS:
        records, _ = tasks.load_test_set(tasks.all_test_sets()[name], cfg.cache_dir, cfg.eval.hellaswag)
        for rec in records[:per_set]:
            it = cloze_prompts.item(name, rec)
            items.append(it)
            requests += list(zip(it.contexts, it.continuations))
    bs = cfg.eval.batch_size
    model.eval()
    sides = {}
    cloze.loglikelihoods(model, tok, requests[:2], bs, device)  # untimed warm-up
    ours, sec, peak = _timed(device, lambda: cloze.loglikelihoods(model, tok, requests, bs, device))
    sides["harness"] = {"seconds": round(sec, 4), "requests_per_second": round(len(requests) / sec, 3), "peak_gib": peak}
    groups = [len(it.contexts) for it in items]  # what runs do: each item's options in a forward of their own
    _, sec, peak = _timed(device, lambda: cloze.loglikelihoods(model, tok, requests, bs, device, groups=groups))
    sides["harness_per_item"] = {"seconds": round(sec, 4), "requests_per_second": round(len(requests) / sec, 3),
                                 "peak_gib": peak}
    try:
        from lm_eval.api.instance import Instance
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        return {"requests": len(requests), "items": len(items), "sides": sides,
                "lm_eval": f"not measured: lm-evaluation-harness is not installed ({exc}); pip install 'peft-bench[bench]'"}
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=bs, device=str(device))
    instances = [Instance(request_type="loglikelihood", doc={}, arguments=p, idx=i) for i, p in enumerate(requests)]
    lm.loglikelihood(instances[:2], disable_tqdm=True)
    theirs, sec, peak = _timed(device, lambda: lm.loglikelihood(instances, disable_tqdm=True))
    sides["lm_eval_hflm"] = {"seconds": round(sec, 4), "requests_per_second": round(len(requests) / sec, 3),
                             "peak_gib": peak}
    mine = cloze.predictions(items, cloze.per_item(ours, items))
    ref = cloze.predictions(items, cloze.per_item(theirs, items))
    return {"requests": len(requests), "items": len(items), "batch_size": bs, "sides": sides,
            "speedup_vs_lm_eval": round(sides["lm_eval_hflm"]["seconds"] / sides["harness"]["seconds"], 3),
            "max_abs_loglik_difference": max(abs(a[0] - b[0]) for a, b in zip(ours, theirs)),
            "same_choices": sum(m["pred_index"] == r["pred_index"] and m["pred_norm_index"] == r["pred_norm_index"]
                                for m, r in zip(mine, ref))}
