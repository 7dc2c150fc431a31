"""Evaluation specifications: batch size does not change predictions; grouped option scoring
equals scoring each option on its own."""
from __future__ import annotations

import torch
from transformers import GenerationConfig

from harness import data, tasks
from harness.pipeline import evaluate, prompts


@torch.no_grad()
def _greedy_without_cache(model, enc, n: int) -> list[int]:
    """Reference decoding: the whole sequence re-run for every token (soft prompt included)."""
    ids = enc["input_ids"]
    out = []
    for _ in range(n):
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1]
        out.append(int(logits.argmax()))
        ids = torch.cat([ids, torch.tensor([[out[-1]]])], dim=1)
    return out


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


def test_prompt_tuning_and_lora_generations_do_not_depend_on_batch_size(work_dirs):
    """Soft prompts are prepended before the left padding; positions must still line up."""
    from harness import methods
    from harness.config.overrides import resolve_one
    from harness.pipeline import models
    for method in ("prompt_tuning", "lora"):
        cfg = resolve_one(["model=tiny-random", f"method={method}", f"cache_dir={work_dirs['cache']}"]
                      + (["method.peft.lora_dropout=0.0"] if method == "lora" else []))
        torch.manual_seed(0)
        model, tok, info = models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, cfg.cache_dir)
        prepared = methods.apply(model, cfg.method, methods.MethodContext(tok, info["resolved_path"],
                                                                          torch.device("cpu")))
        model = prepared.model.eval()
        if method == "lora":  # make the adapters do something (B starts at zero)
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.5)
        texts = _prompts("gsm8k", 4) + _prompts("boolq", 4)
        one, _ = evaluate.generate_answers(model, tok, texts, 16, 1, 1, torch.device("cpu"))
        many, _ = evaluate.generate_answers(model, tok, texts, 16, 8, 1, torch.device("cpu"))
        assert one == many, method
        # and it is the greedy continuation recomputed from scratch at every step (no cache, no padding)
        enc = tok(texts[:1], return_tensors="pt")
        gen_cfg = GenerationConfig(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)
        assert evaluate._generate(model, enc, gen_cfg, tok)[0].tolist() == _greedy_without_cache(model, enc, 16)


def test_merging_lora_and_dora_for_evaluation_keeps_the_function(work_dirs):
    from harness import methods
    from harness.config.overrides import resolve_one
    from harness.pipeline import models, recipe
    ids = torch.tensor([[5, 9, 33, 70, 120, 7]])
    for method in ("lora", "dora"):
        cfg = resolve_one(["model=tiny-random", f"method={method}", f"cache_dir={work_dirs['cache']}"])
        torch.manual_seed(0)
        model, tok, info = models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, cfg.cache_dir)
        model = methods.apply(model, cfg.method, methods.MethodContext(tok, info["resolved_path"],
                                                                       torch.device("cpu"))).model.eval()
        for name, p in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.3)
        with torch.no_grad():
            before = model(input_ids=ids).logits
            assert recipe.merge_for_eval(model)
            after = model(input_ids=ids).logits
        assert torch.allclose(before, after, atol=1e-4), method
