"""Evaluation comparison: LLM-Adapters' evaluate.py decoding against the harness's, same questions.

Reference (their evaluate.py, verbatim in what it computes): one prompt at a time, no attention
mask, 4-beam search, max_new_tokens, return_dict_in_generate with output_scores, the whole sequence
decoded and split at "### Response:". Their temperature/top_p/top_k are left out: without
do_sample they change nothing, and transformers warns about them on every call.
Harness: `harness.evaluate.evaluate_set` (batched, length-sorted, left-padded, KV cache,
eval.num_beams, stop at a repeated response marker).
Both score with the harness's extraction, so an accuracy difference comes from decoding alone.
Both decode the base model (method=none): the same weights for both sides, whatever was trained.
"""
from __future__ import annotations

import torch
from transformers import GenerationConfig

from harness import evaluate, measure, prompts, tasks
from harness.bench import TARGET_SUITE_SECONDS

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


def compare(model, tok, ts: tasks.TestSet, records: list[dict], cfg, max_new_tokens: int,
            device: torch.device) -> dict:
    """Reference vs harness decoding of `records` (the first N questions of test set `ts`)."""
    style, bs, beams = cfg.train.prompt_style, cfg.eval.batch_size, cfg.eval.num_beams
    texts = [prompts.eval_prompt(r["instruction"], r["input"], style) for r in records]
    model.eval()
    # untimed warm-up of both paths (CUDA context, kernels, stop-string tables)
    reference_responses(model, tok, texts[:1], 2, device)
    evaluate.generate_answers(model, tok, texts[:1], 2, bs, beams, device)

    (responses, n_ref), ref_seconds, ref_peak = _timed(
        device, lambda: reference_responses(model, tok, texts, max_new_tokens, device))
    ref_correct = sum(tasks.is_correct(ts, tasks.extract(ts, resp), r["answer"])
                      for resp, r in zip(responses, records))
    (metrics, rows), h_seconds, h_peak = _timed(
        device, lambda: evaluate.evaluate_set(model, tok, ts, records, "generate", max_new_tokens, bs, beams,
                                              style, device))
    n = len(records)
    ref_acc, h_acc = round(100.0 * ref_correct / n, 2), round(metrics["accuracy"], 2)
    agree = sum(tasks.extract(ts, resp) == row["pred"] for resp, row in zip(responses, rows))
    return {
        "test_set": ts.name, "questions": n, "max_new_tokens": max_new_tokens, "model": "base (method=none)",
        "reference": {"decoding": f"beam{REFERENCE_BEAMS}", "batch_size": 1, "seconds": round(ref_seconds, 4),
                      "questions_per_second": round(n / ref_seconds, 4), "accuracy": ref_acc,
                      "generated_tokens": sum(n_ref), "peak_gib": ref_peak},
        "harness": {"decoding": metrics["decoding"], "batch_size": bs, "seconds": round(h_seconds, 4),
                    "questions_per_second": round(n / h_seconds, 4), "accuracy": h_acc,
                    "generated_tokens": metrics["generated_tokens"], "peak_gib": h_peak},
        "speedup": round(ref_seconds / h_seconds, 3),
        "accuracy_differs": ref_acc != h_acc, "same_prediction": agree,
    }


def suite(model, tok, cfg, device: torch.device) -> dict:
    """The harness's evaluation of every test set of every task family (the README's 15-set target),
    with the run config's eval settings (eval.limit, eval.batch_size, eval.scoring...)."""
    tasks.all_test_sets()  # imports every family module
    loaded = []
    for family in tasks.FAMILIES.values():
        for ts in family.test_sets.values():
            records, _ = tasks.load_test_set(ts, cfg.cache_dir, cfg.eval.hellaswag)
            scoring = cfg.eval.scoring if ts.multiple_choice else "generate"
            loaded.append((ts, tasks.select(records, cfg.eval.limit), scoring,
                           cfg.eval.max_new_tokens or family.max_new_tokens))
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
