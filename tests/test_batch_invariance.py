"""An item's score does not depend on what is evaluated with it, in bf16 as in fp32.

The same items of several test sets are scored pooled (one pass over every set), set by set, in a
shuffled order, and at batch sizes 1 and 16, on the tiny random LLaMA cast to bf16, and compared
item by item: the generated text, the option log-likelihoods behind a cloze or label choice, and the
choice. Length-sorted batches across items fail this in bf16 (the padded width and the batch's shape
change the rounding); harness.pipeline.evaluate scores every item in forwards of its own.

And every method is evaluated at one precision: eval.precision casts what a method stores (a frozen
bf16 base, full fine-tuning's fp32 weights) to the same dtype, and puts it back afterwards.
"""
from __future__ import annotations

import copy
import random

import pytest
import torch

from harness import data, tasks
from harness.pipeline import evaluate

CPU = torch.device("cpu")
SETS = {"generate": ("gsm8k", "boolq", "svamp"), "label": ("piqa", "siqa", "arc_challenge"),
        "cloze": ("hellaswag", "arc_challenge", "winogrande")}
ITEMS = 8  # per set


def _sets(names: tuple, items: int = ITEMS) -> list:
    known = tasks.all_test_sets()
    return [(known[n], data.shipped(f"test/{n}")[0][:items]) for n in names]


def _scores(sets: list, predictions: dict) -> dict:
    """Per item (set, instruction): everything that decides its score."""
    keys = ("generation", "pred", "correct", "option_scores", "option_logliks", "pred_index", "pred_norm_index")
    return {(ts.name, rec["instruction"]): tuple(str(row.get(k)) for k in keys)
            for ts, records in sets for rec, row in zip(records, predictions[ts.name], strict=True)}


def _run(model, tok, scoring: str, sets: list, batch_size: int) -> dict:
    _, predictions, _ = evaluate.evaluate_sets(model, tok, sets, scoring, 16, batch_size, 1, "paper", CPU)
    return _scores(sets, predictions)


@pytest.fixture(scope="module")
def bf16_model(tiny):
    model, tok = tiny
    return copy.deepcopy(model).to(torch.bfloat16).eval(), tok


@pytest.mark.parametrize("scoring", list(SETS))
def test_an_items_score_does_not_depend_on_its_batch_in_bf16(bf16_model, scoring):
    model, tok = bf16_model
    sets = _sets(SETS[scoring])
    pooled = _run(model, tok, scoring, sets, 16)
    per_set = {k: v for s in sets for k, v in _run(model, tok, scoring, [s], 16).items()}
    rng = random.Random(0)
    shuffled_sets = [(ts, rng.sample(recs, len(recs))) for ts, recs in reversed(sets)]
    shuffled = _run(model, tok, scoring, shuffled_sets, 5)
    one = _run(model, tok, scoring, sets, 1)
    assert len(pooled) == ITEMS * len(sets)
    for name, other in (("per set", per_set), ("shuffled, batch 5", shuffled), ("batch 1", one)):
        changed = [k for k in pooled if pooled[k] != other[k]]
        assert not changed, f"{scoring}: {len(changed)} of {len(pooled)} items scored differently {name}"
    if scoring == "generate":  # the prompts really produce different continuations
        assert len({v[0] for v in pooled.values()}) > 1


def test_the_retention_pass_scores_a_set_as_the_evaluation_pass_does(bf16_model):
    """The study's symptom: a set's cells in the evaluation pass (every test set pooled) and in the
    retention pass (the retention suite only, its own batch size) must be the same numbers."""
    model, tok = bf16_model
    evaluation = _sets(("boolq", "piqa", "hellaswag", "winogrande", "arc_challenge"), 6)
    retention = _sets(("hellaswag", "arc_challenge", "winogrande"), 6)
    m_eval, p_eval, _ = evaluate.evaluate_sets(model, tok, evaluation, "cloze", 1, 32, 1, "paper", CPU)
    m_ret, p_ret, _ = evaluate.evaluate_sets(model, tok, retention, "cloze", 1, 3, 1, "paper", CPU)
    for name in ("hellaswag", "arc_challenge", "winogrande"):
        assert [r["option_logliks"] for r in p_eval[name]] == [r["option_logliks"] for r in p_ret[name]], name
        assert m_eval[name]["accuracy"] == m_ret[name]["accuracy"]


# ---- one precision for every method ---------------------------------------------------------

def test_evaluation_precision_resolves_from_the_run():
    cuda, cpu = torch.device("cuda"), CPU
    assert evaluate.evaluation_dtype("auto", "auto", cuda) == torch.bfloat16
    assert evaluate.evaluation_dtype("auto", "auto", cpu) == torch.float32
    assert evaluate.evaluation_dtype("auto", "bf16", cpu) == torch.bfloat16  # the run trains in bf16
    assert evaluate.evaluation_dtype("fp32", "bf16", cuda) == torch.float32
    assert evaluate.evaluation_dtype("bf16", "fp32", cpu) == torch.bfloat16


def test_fp32_weights_are_evaluated_as_a_bf16_base_is_and_restored_bit_for_bit(tiny):
    """Full fine-tuning keeps fp32 weights, a PEFT method's frozen base is stored in bf16: at
    eval.precision=bf16 both are evaluated as the same bf16 model, and the fp32 weights come back."""
    model, tok = tiny
    fp32 = copy.deepcopy(model)
    stored_bf16 = copy.deepcopy(model).to(torch.bfloat16)
    for name, buf in stored_bf16.named_buffers():  # as a bf16 load keeps them (rotary frequencies)
        buf.data = dict(fp32.named_buffers())[name].data.clone()
    before = {n: p.detach().clone() for n, p in fp32.named_parameters()}
    sets = _sets(("arc_challenge", "winogrande"), 6)
    m_a, p_a, info_a = evaluate.evaluate_sets(fp32, tok, sets, "cloze", 1, 4, 1, "paper", CPU, precision=torch.bfloat16)
    m_b, p_b, info_b = evaluate.evaluate_sets(stored_bf16, tok, sets, "cloze", 1, 4, 1, "paper", CPU,
                                              precision=torch.bfloat16)
    assert _scores(sets, p_a) == _scores(sets, p_b)
    assert info_a["precision"] == info_b["precision"] == "bf16" and m_a["winogrande"]["precision"] == "bf16"
    for n, p in fp32.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, before[n]), n
    # and left as it is, the fp32 model scores differently: the cast is what makes them alike
    _, p_c, info_c = evaluate.evaluate_sets(fp32, tok, sets, "cloze", 1, 4, 1, "paper", CPU)
    assert info_c["precision"] == "fp32" and _scores(sets, p_c) != _scores(sets, p_a)


def test_a_bf16_base_with_fp32_adapters_is_evaluated_wholly_at_the_chosen_precision(work_dirs):
    from harness import methods
    from harness.config.overrides import resolve_one
    from harness.pipeline import models
    cfg = resolve_one(["model=tiny-random", "method=lora", f"cache_dir={work_dirs['cache']}"])
    model, tok, info = models.load(cfg.model, cfg.method, CPU, torch.bfloat16, cfg.cache_dir)
    model = methods.apply(model, cfg.method, methods.MethodContext(tok, info["resolved_path"], CPU)).model.eval()
    assert evaluate.precision_name(model) in ("bf16", "bf16+fp32")
    with evaluate.at_precision(model, torch.float32):
        assert evaluate.precision_name(model) == "fp32"
    with evaluate.at_precision(model, torch.bfloat16):
        assert evaluate.precision_name(model) == "bf16"
    assert evaluate.precision_name(model) in ("bf16", "bf16+fp32")


def test_the_record_says_how_items_were_batched(tiny):
    model, tok = tiny
    sets = _sets(("winogrande",), 2)
    _, _, per_item = evaluate.evaluate_sets(model, tok, sets, "cloze", 1, 16, 1, "paper", CPU)
    _, _, batched = evaluate.evaluate_sets(model, tok, sets, "cloze", 1, 16, 1, "paper", CPU, invariant=False)
    assert per_item["batching"] == "per item" and batched["batching"] == "length-sorted batches of 16"
