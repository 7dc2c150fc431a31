"""validation.keep_best: training ends with the weights of the lowest validation loss seen, as
LLM-Adapters' Trainer keeps its best checkpoint; a killed and resumed run still knows the best of
the steps before the kill."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from harness.pipeline import heldout, runner
from harness.pipeline.train_state import BestWeights
from harness.record import read_record


def test_the_run_ends_with_the_weights_of_the_lowest_validation_loss(compose_run, monkeypatch, tmp_path):
    """The validation losses are scripted (lowest after step 2 of 4); the saved adapter must be the
    weights of step 2, not of step 4, and the record must say so."""
    scripted = iter([3.0, 1.0, 2.0, 2.5, 1.0])
    seen = []

    def fake_loss(model, *args, **kwargs):
        seen.append({n.replace(".default", ""): p.detach().clone() for n, p in model.named_parameters()
                     if p.requires_grad})
        return next(scripted)
    monkeypatch.setattr(heldout, "loss", fake_loss)
    cfg = compose_run("method=lora", "train.max_steps=4", "validation.size=4", "validation.every=1",
                      "validation.keep_best=true", "eval.enabled=false", "forgetting.enabled=false",
                      results=tmp_path)
    runner.run(cfg)
    rec = read_record(next((tmp_path / "runs").glob("*.json")))
    assert rec.ok, rec.error
    assert [v["step"] for v in rec.train_info.validation_loss] == [1, 2, 3, 4]
    assert rec.train_info.validation_best == {"kept_step": 2, "kept_loss": 1.0, "last_step": 4,
                                              "loss_after_restore": 1.0}
    saved = load_file(str(tmp_path / "checkpoints" / rec.run_id / "adapter_model.safetensors"))
    at_step = dict(enumerate(seen, start=1))
    assert len(saved) == len(at_step[2]) > 0
    for name, value in saved.items():
        assert torch.equal(value, at_step[2][name]), name
    assert any(not torch.equal(at_step[2][n], at_step[4][n]) for n in saved)  # the last step's weights differ


def test_the_best_weights_survive_a_restart_of_the_process(tmp_path):
    model = torch.nn.Linear(3, 2)
    keeper = BestWeights(model, tmp_path)
    keeper.offer(5, 0.7)
    best = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.no_grad():
        model.weight.add_(1.0)
    keeper.offer(6, 0.9)  # worse: not kept
    # the process is killed; a new one (same directory) resumes and trains on
    again = BestWeights(model, tmp_path)
    assert (again.step, again.loss) == (5, 0.7)
    again.offer(8, 0.8)
    assert again.restore(last_step=8) == {"kept_step": 5, "kept_loss": 0.7, "last_step": 8}
    for name, p in model.named_parameters():
        assert torch.equal(p, best[name]), name
