"""Every registered method, old and new, on the tiny random LLaMA (hidden 64, intermediate 128):
only its parameters train and the base stays bit-identical where the method is additive; step 0
equals the base where the method is initialised so; it saves safetensors and loads back through its
registry entry with the same outputs; greedy generation does not depend on the batch size (fp32,
left padding; prompt-based methods included) and agrees with the training forward; registry facts:
families, aliases, recipes. Quantised bases, other model shapes and each method's own wiring (LoRA+,
AdaLoRA, BOFT, the VRAM estimator) are in tests/test_method_zoo_bases.py."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from harness import methods
from harness.pipeline import evaluate, prompts, recipe
from method_zoo_helpers import (ALL, ALL_SPECS, CPU, MUTATES_BASE, PROMPT_LEARNING, STEP0_CLOSE,  # noqa: F401
                                STEP0_DIFFERS, STEP0_EXACT, TRAINS, build, fresh, logits, method_cfg, train_steps)


# ---- registry ---------------------------------------------------------------------------------

def test_every_method_has_a_family_label_and_a_yaml():
    conf = Path(__file__).resolve().parents[1] / "conf" / "method"
    for name, spec in ALL_SPECS.items():
        assert methods.FAMILY_LABELS[spec.family]
        assert (conf / f"{name}.yaml").is_file(), name
    expected = {"prefix_tuning": "prompt", "p_tuning": "prompt", "prompt_tuning": "prompt", "ia3": "multiplicative",
                "oft": "multiplicative", "boft": "multiplicative", "ln_tuning": "selective", "bitfit": "selective",
                **dict.fromkeys(("loha", "lokr", "vera", "adalora", "rslora", "pissa", "olora", "lora_plus"), "lora")}
    assert {n: ALL_SPECS[n].family for n in expected} == expected


def test_published_prefix_is_prefix_tuning():
    assert methods.canonical("prefix") == "prefix_tuning" and methods.canonical("lora") == "lora"
    assert methods.family_label("prefix") == "prompt-based"
    assert methods.canonical("no-such-method") == "no-such-method"


def test_recipes_compose_with_their_sources_values():
    assert method_cfg("prefix_tuning").peft.num_virtual_tokens == 10 and method_cfg("prefix_tuning").lr == 3e-2
    assert method_cfg("rslora").peft.use_rslora is True and method_cfg("rslora").peft.r == 32
    pissa = method_cfg("pissa")
    assert pissa.peft.init_lora_weights == "pissa" and pissa.lr < method_cfg("lora").lr
    assert method_cfg("olora").peft.init_lora_weights == "olora"
    assert method_cfg("lora_plus").optimizer.loraplus_lr_ratio == 16
    assert method_cfg("oft").peft.oft_block_size == 32


# ---- training: only the method's parameters move --------------------------------------------

@pytest.mark.parametrize("name", TRAINS)
def test_only_the_method_parameters_train(fresh, name):
    model, tok = fresh
    original = {n: (p, p.detach().clone()) for n, p in model.named_parameters()}
    prepared = build(name, model, tok)
    pm = prepared.model
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    assert trainable
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if not p.requires_grad}
    got_grad = train_steps(name, pm, tok)
    assert got_grad == trainable, f"trainable parameters that never got a gradient: {sorted(trainable - got_grad)[:4]}"
    now = dict(pm.named_parameters())
    moved = [n for n, v in frozen.items() if not torch.equal(now[n], v)]
    assert not moved, f"frozen parameters changed in training: {moved[:4]}"
    if name == "full":
        return
    if name in MUTATES_BASE:  # the residual replaced the weights at initialisation, and stayed
        assert any(not torch.equal(p, v) for p, v in original.values())
        return
    changed = [n for n, (p, v) in original.items() if not torch.equal(p, v)]
    assert not changed, f"base weights changed: {changed[:4]}"  # additive: the base is bit-identical


@pytest.mark.parametrize("name", TRAINS)
def test_step0_matches_the_base_where_the_method_is_initialised_so(fresh, name):
    model, tok = fresh
    base = logits(model, tok)
    got = logits(build(name, model, tok).model, tok)
    if name in STEP0_EXACT:
        assert torch.equal(got, base)
    elif name in STEP0_CLOSE:
        assert torch.allclose(got, base, atol=1e-4, rtol=1e-4)
    else:
        assert name in STEP0_DIFFERS, f"{name}: say whether step 0 equals the base model"
        assert not torch.allclose(got, base, atol=1e-4)


def test_every_training_method_is_classified_for_step0():
    assert set(TRAINS) - {"qlora4", "qlora8"} <= STEP0_EXACT | STEP0_CLOSE | STEP0_DIFFERS


# ---- save and load ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL)
def test_saves_safetensors_and_loads_back_with_the_same_outputs(fresh, tiny, tmp_path, name):
    model, tok = fresh
    prepared = build(name, model, tok, steps=2)
    if methods.get(name).trains:
        train_steps(name, prepared.model, tok)
    expected = logits(prepared.model, tok)
    prepared.save(str(tmp_path / "ckpt"))
    files = [p.name for p in (tmp_path / "ckpt").rglob("*") if p.is_file()] if (tmp_path / "ckpt").exists() else []
    if name != "none":
        assert any(f.endswith(".safetensors") for f in files), files
        assert not [f for f in files if f.endswith((".bin", ".pt", ".pth"))], files
    loaded = methods.get(name).load(copy.deepcopy(tiny[0]), str(tmp_path / "ckpt"))
    got = logits(loaded, tok)
    # PiSSA/OLoRA load as rank-2r LoRA on the original base: the same function, other rounding
    tol = 1e-4 if name in MUTATES_BASE else 1e-6
    assert torch.allclose(got, expected, atol=tol, rtol=tol), (got - expected).abs().max()


# ---- evaluation -------------------------------------------------------------------------------

TEXTS = [prompts.eval_prompt(q, "", "paper") for q in (
    "What is 7 plus 5?", "A farmer has 3 cows and buys 4 more. How many cows?", "Hi", "Compute 12 * 3",
    "Tom had 15 apples, gave away 6 and ate 2. How many are left now?", "2+2", "Is the sky blue? Answer yes or no.",
    "Sarah reads 20 pages a day for 4 days; how many pages did she read in total?")]


def eval_model(name, model, tok):
    """The method trained a little (so it changes the model), prepared for evaluation as the runner does."""
    prepared = build(name, model, tok, steps=2)
    if methods.get(name).trains:
        train_steps(name, prepared.model, tok, lr=5e-2)
    pm = prepared.model.eval()
    if methods.get(name).merges_for_eval:
        assert recipe.merge_for_eval(pm)
    return pm


@pytest.mark.parametrize("name", ALL)
def test_greedy_generation_is_batch_size_invariant_and_agrees_with_the_forward(fresh, name):
    model, tok = fresh
    pm = eval_model(name, model, tok)
    one, _ = evaluate.generate_answers(pm, tok, TEXTS, 8, 1, 1, CPU)
    eight, _ = evaluate.generate_answers(pm, tok, TEXTS, 8, 8, 1, CPU)
    assert one == eight
    # the first generated token is the training forward's greedy choice after the unpadded prompt
    gen_cfg = evaluate.GenerationConfig(max_new_tokens=1, do_sample=False, num_beams=1, pad_token_id=tok.pad_token_id,
                                        eos_token_id=tok.eos_token_id)
    tok.padding_side = "left"
    for text in TEXTS[:4]:
        enc = tok([text], return_tensors="pt")
        with torch.no_grad():
            first = evaluate._generate(pm, enc, gen_cfg, tok)[0, 0]
            forward = pm(**enc).logits[0, -1].argmax()
        assert int(first) == int(forward), text


@pytest.mark.parametrize("name", PROMPT_LEARNING)
def test_prompt_learning_beam_search_is_batch_size_invariant(fresh, name):
    model, tok = fresh
    pm = eval_model(name, model, tok)
    three, _ = evaluate.generate_answers(pm, tok, TEXTS[:6], 6, 3, 2, CPU)
    one, _ = evaluate.generate_answers(pm, tok, TEXTS[:6], 6, 1, 2, CPU)
    assert three == one


@pytest.mark.parametrize("name", PROMPT_LEARNING)
def test_cloze_scores_prompt_learning_models_at_the_right_positions(fresh, name):
    """Log-likelihoods through harness.pipeline.cloze (right padding, logits_to_keep) equal a plain forward."""
    from harness.pipeline import cloze
    model, tok = fresh
    pm = eval_model(name, model, tok)
    pairs = [("Question: what is 2 plus 2?\nAnswer:", " 4"), ("The sky is", " blue today"), ("Hi", " there")]
    got = cloze.loglikelihoods(pm, tok, pairs, batch_size=3, device=CPU)
    for (context, continuation), (ll, _) in zip(pairs, got):
        ctx_ids, cont_ids = cloze.encode_pair(tok, context, continuation)
        ids = torch.tensor([ctx_ids + cont_ids])
        with torch.no_grad():
            out = pm(input_ids=ids[:, :-1]).logits[0, -len(cont_ids):]
        expected = torch.log_softmax(out.float(), -1).gather(1, torch.tensor(cont_ids)[:, None]).sum()
        assert ll == pytest.approx(float(expected), abs=1e-4)
