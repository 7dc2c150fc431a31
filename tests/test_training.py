"""Training-loop specifications."""
from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf

from harness import prompts
from harness.config import TrainConfig
from harness.errors import ConfigError
from harness.train import IGNORE, micro_batches, schedule, tokenize_examples, train
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


def test_micro_batches_cover_every_example_once_per_epoch():
    lengths = [5, 50, 7, 300, 12, 40, 41, 8, 9, 100]
    for grouped in (True, False):
        mbs = micro_batches(lengths, 3, seed=1, group_by_length=grouped)
        flat = sorted(i for mb in mbs for i in mb)
        assert flat == list(range(10))
    assert micro_batches(lengths, 3, 1, True) == micro_batches(lengths, 3, 1, True)  # seeded


def test_schedule_warms_up_then_decays_to_zero():
    f, warmup = schedule(100, 10)
    assert warmup == 10 and f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(100) == 0.0
    _, short = schedule(20, 100)  # a short run warms up for a tenth of it
    assert short == 2


@pytest.mark.parametrize("batch,micro", [(0, 1), (-4, 2), (4, 0), (6, 4)])
def test_impossible_batch_sizes_are_rejected(batch, micro):
    cfg = OmegaConf.structured(TrainConfig(batch_size=batch, micro_batch_size=micro))
    with pytest.raises(ConfigError, match="batch_size"):
        check_training(cfg, lr=1e-4)


def _step_gradients(model, tok, micro: int, monkeypatch) -> list:
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
                                           max_grad_norm=1e9, group_by_length=False))
    with monkeypatch.context() as mp:
        mp.setattr(torch.nn.utils, "clip_grad_norm_", capture)
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
