"""Training-loop specifications."""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness import prompts
from harness.config import TrainConfig
from harness.errors import ConfigError
from harness.batching import IGNORE, collate, epoch_steps, split_step
from harness.train import schedule, tokenize_examples, train
from harness.validate import check_training

REC = {"instruction": "What is 2+3?", "input": "", "output": "2+3=5. The answer is 5.", "answer": "5"}


def tokenize_example(rec, tok, cutoff_len, train_on_inputs, style):
    return tokenize_examples([rec], tok, cutoff_len, train_on_inputs, style)[0]


def test_tokenize_appends_eos_and_masks_prompt_when_asked(tiny):
    _, tok = tiny
    full = tokenize_example(REC, tok, 1024, True, "paper")
    assert full["input_ids"][-1] == tok.eos_token_id and full["labels"] == full["input_ids"]
    masked = tokenize_example(REC, tok, 1024, False, "paper")
    n_user = len(tok(prompts.train_prompt(REC["instruction"], "", "", "paper"))["input_ids"])
    assert masked["labels"][:n_user] == [IGNORE] * n_user
    assert masked["labels"][n_user:] == full["input_ids"][n_user:]
    cut = tokenize_example(REC, tok, 40, True, "paper")
    assert len(cut["input_ids"]) == 40 and cut["input_ids"][-1] != tok.eos_token_id  # truncated: no EOS


def test_steps_cover_every_example_once_per_epoch_and_forwards_cover_each_step():
    lengths = [5, 50, 7, 300, 12, 40, 41, 8, 9, 100]
    for grouped in (True, False):
        steps = epoch_steps(lengths, 4, seed=1, group_by_length=grouped)
        assert sorted(i for s in steps for i in s) == list(range(10)) and [len(s) for s in steps].count(4) == 2
        for step in steps:
            for budget, packing in ((0, False), (120, False), (120, True)):
                forwards = split_step(step, lengths, 3, budget, packing)
                assert sorted(i for f in forwards for i in f) == sorted(step)
    assert epoch_steps(lengths, 4, 1, True) == epoch_steps(lengths, 4, 1, True)  # seeded
    # grouped: a step's examples come from one length-sorted window, so they are alike
    grouped = epoch_steps(list(range(1, 257)), 4, seed=0, group_by_length=True)
    assert max(max(s) - min(s) for s in grouped) < 8


def test_a_token_budget_fills_forwards_longest_first():
    lengths = [100, 90, 30, 30, 20, 10]
    assert split_step(list(range(6)), lengths, 2) == [[0, 1], [2, 3], [4, 5]]
    assert split_step(list(range(6)), lengths, 2, max_tokens=200) == [[0, 1], [2, 3, 4, 5]]  # 2 x 100; 4 x 30
    assert split_step(list(range(6)), lengths, 2, max_tokens=200, packing=True) == [[0, 1], [2, 3, 4, 5]]
    assert split_step([0, 5], lengths, 2, max_tokens=50) == [[0], [5]]  # longer than the budget: alone


def test_packed_rows_restart_positions_and_hide_each_examples_first_label():
    ex = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [IGNORE, 9]}]
    b = collate(ex, 0, torch.device("cpu"), packing=True)
    assert b["inputs"]["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert b["inputs"]["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert b["inputs"]["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]] and "attention_mask" not in b["inputs"]
    padded = collate(ex, 0, torch.device("cpu"))
    assert b["counts"]["items"] == padded["counts"]["items"] == 3  # the same label tokens
    assert (b["counts"]["real"], b["counts"]["padded"], padded["counts"]["padded"]) == (5, 5, 6)


def test_schedule_is_transformers_linear_schedule_with_a_capped_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched, warmup = schedule(opt, 100, 10)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert warmup == 10 and lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5) and lrs[-1] == pytest.approx(1 / 90)
    assert schedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 20, 100)[1] == 2  # a tenth


@pytest.mark.parametrize("batch,micro", [(0, 1), (-4, 2), (4, 0), (6, 4)])
def test_impossible_batch_sizes_are_rejected(batch, micro):
    cfg = OmegaConf.structured(TrainConfig(batch_size=batch, micro_batch_size=micro))
    with pytest.raises(ConfigError, match="batch_size"):
        check_training(cfg, lr=1e-4)


def _step_gradients(model, tok, micro: int, monkeypatch, **levers) -> list:
    """Gradients of one optimizer step, captured where the loop clips them."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    captured = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def capture(params, max_norm):
        captured.extend(p.grad.detach().clone() for p in params)
        return real_clip(params, max_norm)

    recs = [dict(REC, output="x" * n) for n in (3, 30, 11, 60)]
    examples = [tokenize_example(r, tok, 256, True, "clean") for r in recs]
    cfg = OmegaConf.structured(TrainConfig(max_steps=1, batch_size=4, micro_batch_size=micro, warmup_steps=0,
                                           max_grad_norm=1e9, group_by_length=False, **levers))
    with monkeypatch.context() as mp:
        mp.setattr(torch.nn.utils, "clip_grad_norm_", capture)
        # warmup_steps=0 still warms up for one step (capped at a tenth, at least 1): step 0's lr is 0,
        # but its gradient is computed and captured all the same
        train(m, tok, examples, cfg, lr=1e-3, seed=0, device=torch.device("cpu"), dtype=torch.float32)
    return captured


def test_micro_batching_does_not_change_the_gradient(tiny, monkeypatch):
    """The step loss is token-sum / step tokens: splitting a step into micro-batches (and so
    padding differently) gives the same gradient as one big batch."""
    model, tok = tiny
    whole, split = _step_gradients(model, tok, 4, monkeypatch), _step_gradients(model, tok, 1, monkeypatch)
    assert len(whole) == len(split) > 0
    for a, b in zip(whole, split):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in whole)


@pytest.mark.parametrize("levers", [{"packing": True}, {"max_tokens_per_batch": 200},
                                    {"packing": True, "max_tokens_per_batch": 150}])
def test_packing_and_token_budgets_do_not_change_the_gradient(tiny, monkeypatch, levers):
    """One packed row with position ids restarting (transformers' block-diagonal mask), or forwards
    cut by a token budget: the same gradient as padded rows (so the same loss), to float tolerance."""
    model, tok = tiny
    padded = _step_gradients(model, tok, 2, monkeypatch)
    other = _step_gradients(model, tok, 2, monkeypatch, **levers)
    assert len(padded) == len(other) > 0
    for a, b in zip(padded, other):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_bf16_training_still_learns(tiny):
    """bf16 weights and autocast (the AMX lever on CPU): the loss on the training examples falls as
    it does in fp32, and every LoRA matrix moves."""
    from harness import methods
    from harness.config import compose
    _, tok = tiny
    recs = [dict(REC, output=f"{a}+{b}={a + b}. The answer is {a + b}.") for a, b in zip(range(8), range(3, 11))]
    examples = tokenize_examples(recs, tok, 256, True, "clean")
    drops = {}
    for dtype in (torch.float32, torch.bfloat16):
        cfg = compose(["model=tiny-random", "method=lora", "method.peft.lora_dropout=0.0"])
        from harness import models
        model, _, _ = models.load(cfg.model, cfg.method, torch.device("cpu"), dtype, cfg.cache_dir)
        model = methods.apply(model, cfg.method, methods.MethodContext(tok, "", torch.device("cpu"))).model
        before = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        tcfg = OmegaConf.structured(TrainConfig(max_steps=12, batch_size=8, micro_batch_size=4, warmup_steps=1))
        info = train(model, tok, examples, tcfg, lr=3e-3, seed=0, device=torch.device("cpu"), dtype=dtype)
        drops[dtype] = info["losses"][0] - info["losses"][-1]
        assert info["precision"] == str(dtype).replace("torch.", "") and info["autocast"] == (dtype == torch.bfloat16)
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach().float(), before[n])]
        assert len(moved) == len(before)
    assert drops[torch.float32] > 0.3 and drops[torch.bfloat16] > 0.5 * drops[torch.float32]


def test_weights_that_train_stay_fp32_under_bf16():
    """A bf16 weight cannot take an AdamW update of lr 2e-5 (below half its precision): full
    fine-tuning keeps fp32 master weights under bf16 autocast, frozen bases are stored in bf16."""
    from harness import models
    from harness.config import compose
    full = compose(["model=tiny-random", "method=full", "train.precision=bf16"])
    lora = compose(["model=tiny-random", "method=lora", "train.precision=bf16"])
    assert models.storage_dtype(full.method, torch.bfloat16) == torch.float32
    assert models.storage_dtype(lora.method, torch.bfloat16) == torch.bfloat16
    assert models.storage_dtype(full.method, torch.float32) == torch.float32
    w = torch.full((1000,), 0.05, dtype=torch.bfloat16)
    assert torch.equal(w + 2e-5, w)  # the update that pure bf16 would lose
    model, _, info = models.load(full.model, full.method, torch.device("cpu"), torch.bfloat16, full.cache_dir)
    assert next(model.parameters()).dtype == torch.float32 and info["compute_dtype"] == "bfloat16"
