"""Training-loop specifications."""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness.config import TrainConfig
from harness.config.checks import check_training
from harness.errors import ConfigError
from harness.pipeline import prompts
from harness.pipeline.train import IGNORE, Collator, capped_warmup, tokenize_examples, train

REC = {"instruction": "What is 2+3?", "input": "", "output": "2+3=5. The answer is 5.", "answer": "5"}
FULL = OmegaConf.create({"name": "full"})  # the method section train() reads: its registry entry


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


def test_packed_rows_restart_positions_and_hide_each_examples_first_label(tiny):
    """Padding-free batches come from transformers' DataCollatorWithFlattening: one row, position ids
    restarting per example (transformers turns them into a block-diagonal mask), each example's
    first label ignored, as the padded layout's label shift leaves it untargeted."""
    _, tok = tiny
    ex = [{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}, {"input_ids": [8, 9], "labels": [IGNORE, 9]}]
    packed = Collator(tok, packing=True)(ex)
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9]] and "attention_mask" not in packed
    tok.padding_side = "left"  # as evaluation leaves it: training pads right regardless
    padded = Collator(tok, packing=False)(ex)
    assert tok.padding_side == "left"
    tok.padding_side = "right"
    assert tuple(padded["input_ids"].shape) == (2, 3) and padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["labels"].tolist() == [[5, 6, 7], [IGNORE, 9, IGNORE]]
    # the same label targets: the loss counts labels[:, 1:] in both layouts
    assert int((packed["labels"][:, 1:] != IGNORE).sum()) == int((padded["labels"][:, 1:] != IGNORE).sum()) == 3


def test_the_warmup_is_capped_at_a_tenth_of_a_short_run():
    assert capped_warmup(100, 10) == 10 and capped_warmup(20, 100) == 2 and capped_warmup(5, 100) == 1
    assert capped_warmup(100, 0) == 0


def test_trainer_runs_the_linear_schedule_with_the_capped_warmup(tiny):
    """The learning rate of every step, as Trainer logs it: linear warmup from 0 over the capped
    warmup, then linear decay to 0 (LLM-Adapters' schedule)."""
    model, tok = tiny
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    lrs = {}
    examples = [tokenize_example(dict(REC, output="x" * n), tok, 64, True, "clean") for n in range(1, 5)]
    cfg = OmegaConf.structured(TrainConfig(max_steps=20, batch_size=2, micro_batch_size=2, warmup_steps=100,
                                           log_every=1))
    train(m, tok, examples, cfg, lr=1.0, seed=0, device=torch.device("cpu"), dtype=torch.float32,
          method_cfg=FULL, on_log=lambda step, metrics: lrs.update({step: metrics.get("train/lr")}) if
          "train/lr" in metrics else None)
    # step k (1-based) ran at the rate set after k-1 scheduler steps; warmup 2 = a tenth of 20
    assert lrs[1] == 0.0 and lrs[2] == pytest.approx(0.5) and lrs[3] == pytest.approx(1.0)
    assert lrs[12] == pytest.approx(0.5) and lrs[20] == pytest.approx(1 / 18)


@pytest.mark.parametrize("batch,micro", [(0, 1), (-4, 2), (4, 0), (6, 4)])
def test_impossible_batch_sizes_are_rejected(batch, micro):
    cfg = OmegaConf.structured(TrainConfig(batch_size=batch, micro_batch_size=micro))
    with pytest.raises(ConfigError, match="batch_size"):
        check_training(cfg, lr=1e-4)


def _step_gradients(model, tok, micro: int, monkeypatch, **levers) -> list:
    """Gradients of one optimizer step, captured as the optimizer receives them."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    captured = []
    real_step = torch.optim.AdamW.step

    def capture(opt, *args, **kwargs):  # the gradients the optimizer step is given
        captured.extend(p.grad.detach().clone() for g in opt.param_groups for p in g["params"])
        return real_step(opt, *args, **kwargs)

    recs = [dict(REC, output="x" * n) for n in (3, 30, 11, 60)]
    examples = [tokenize_example(r, tok, 256, True, "clean") for r in recs]
    cfg = OmegaConf.structured(TrainConfig(max_steps=1, batch_size=4, micro_batch_size=micro, warmup_steps=0,
                                           max_grad_norm=1e9, group_by_length=False, **levers))
    with monkeypatch.context() as mp:
        mp.setattr(torch.optim.AdamW, "step", capture)
        train(m, tok, examples, cfg, lr=1e-3, seed=0, device=torch.device("cpu"), dtype=torch.float32,
              method_cfg=FULL)
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


@pytest.mark.parametrize("micro", [1, 2, 4])
def test_packing_does_not_change_the_gradient(tiny, monkeypatch, micro):
    """One packed row per micro-batch with position ids restarting (transformers' block-diagonal
    mask): the same gradient as padded rows (so the same loss), to float tolerance."""
    model, tok = tiny
    padded = _step_gradients(model, tok, 4, monkeypatch)
    other = _step_gradients(model, tok, micro, monkeypatch, packing=True)
    assert len(padded) == len(other) > 0
    for a, b in zip(padded, other):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_bf16_training_still_learns(tiny):
    """bf16 weights and autocast (the AMX lever on CPU): the loss on the training examples falls as
    it does in fp32, and every LoRA matrix moves."""
    from harness import methods
    from harness.config.overrides import resolve_one
    _, tok = tiny
    recs = [dict(REC, output=f"{a}+{b}={a + b}. The answer is {a + b}.") for a, b in zip(range(8), range(3, 11))]
    examples = tokenize_examples(recs, tok, 256, True, "clean")
    drops = {}
    for dtype in (torch.float32, torch.bfloat16):
        cfg = resolve_one(["model=tiny-random", "method=lora", "method.peft.lora_dropout=0.0"])
        from harness.pipeline import models
        model, _, _ = models.load(cfg.model, cfg.method, torch.device("cpu"), dtype, cfg.cache_dir)
        model = methods.apply(model, cfg.method, methods.MethodContext(tok, "", torch.device("cpu"))).model
        before = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}
        tcfg = OmegaConf.structured(TrainConfig(max_steps=12, batch_size=8, micro_batch_size=4, warmup_steps=1))
        info = train(model, tok, examples, tcfg, lr=3e-3, seed=0, device=torch.device("cpu"), dtype=dtype,
                     method_cfg=cfg.method)
        drops[dtype] = info["losses"][0] - info["losses"][-1]
        assert info["precision"] == str(dtype).replace("torch.", "") and info["autocast"] == (dtype == torch.bfloat16)
        moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p.detach().float(), before[n])]
        assert len(moved) == len(before)
    assert drops[torch.float32] > 0.3 and drops[torch.bfloat16] > 0.5 * drops[torch.float32]


def test_weights_that_train_stay_fp32_under_bf16():
    """A bf16 weight cannot take an AdamW update of lr 2e-5 (below half its precision): full
    fine-tuning keeps fp32 master weights under bf16 autocast, frozen bases are stored in bf16."""
    from harness.config.overrides import resolve_one
    from harness.pipeline import models
    full = resolve_one(["model=tiny-random", "method=full", "train.precision=bf16"])
    lora = resolve_one(["model=tiny-random", "method=lora", "train.precision=bf16"])
    assert models.storage_dtype(full.method, torch.bfloat16) == torch.float32
    assert models.storage_dtype(lora.method, torch.bfloat16) == torch.bfloat16
    assert models.storage_dtype(full.method, torch.float32) == torch.float32
    w = torch.full((1000,), 0.05, dtype=torch.bfloat16)
    assert torch.equal(w + 2e-5, w)  # the update that pure bf16 would lose
    model, _, info = models.load(full.model, full.method, torch.device("cpu"), torch.bfloat16, full.cache_dir)
    assert next(model.parameters()).dtype == torch.float32 and info["compute_dtype"] == "bfloat16"
