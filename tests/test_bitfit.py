"""BitFit on a tiny LLaMA: zero biases added to the bias-free projections, step 0 equals the base
model, only biases train, the saved file holds exactly the trained biases; existing biases are
trained, not replaced. Also: the method registry's error for an unknown name."""
from __future__ import annotations

import importlib
import json
import pkgutil
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from harness import methods
from harness.config import MethodConfig
from harness.errors import ConfigError

# Import every method module, so the registry is complete whatever other test modules imported first
# (see test_registry_complete_after_direct_module_import).
for _mod in pkgutil.iter_modules(methods.__path__):
    importlib.import_module(f"{methods.__name__}.{_mod.name}")

LAYERS = 2
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
# out_features on the tiny model: hidden 32, 4 heads of 8, 2 kv heads (k/v 16), intermediate 64
OUT = {"q_proj": 32, "k_proj": 16, "v_proj": 16, "o_proj": 32, "gate_proj": 64, "up_proj": 64, "down_proj": 32}


def ids(seed=1, shape=(2, 9)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64, shape, generator=g)


@torch.no_grad()
def logits(model):
    return model(input_ids=ids()).logits


def cfg(**kw):
    c = OmegaConf.structured(MethodConfig(name="bitfit"))
    for k, v in kw.items():
        c[k] = v
    return c


def ctx():
    return methods.MethodContext(tokenizer=None, model_ref="", device=torch.device("cpu"))


def bitfit(model, **kw):
    return methods.get("bitfit").build(model, cfg(**kw), ctx())


def projections(model):
    """(name, Linear) for each targeted projection of each layer."""
    out = []
    for i, layer in enumerate(model.model.layers):
        for p in PROJ:
            parent = layer.self_attn if p in ATTN else layer.mlp
            out.append((f"model.layers.{i}.{'self_attn' if p in ATTN else 'mlp'}.{p}", getattr(parent, p)))
    return out


def lm_steps(model, n=3, lr=1e-2):
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)  # all parameters: a leak would show
    x = ids(seed=2, shape=(4, 12))
    for _ in range(n):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


def test_base_tiny_llama_is_bias_free(make_tiny_llama):
    assert not [n for n, _ in make_tiny_llama().named_parameters() if n.endswith(".bias")]


def test_adds_zero_biases(make_tiny_llama):
    model = make_tiny_llama()
    prepared = bitfit(model)
    assert prepared.model is model
    assert prepared.notes["bitfit_added_zero_biases"] == 7 * LAYERS == 14
    assert prepared.notes["bitfit_existing_biases"] == 0
    for name, lin in projections(model):
        assert lin.bias is not None, name
        assert lin.bias.shape == (OUT[name.rsplit(".", 1)[-1]],)
        assert lin.bias.dtype == torch.float32
        assert torch.count_nonzero(lin.bias) == 0
    biases = [n for n, _ in model.named_parameters() if n.endswith(".bias")]
    assert len(biases) == 14


def test_step0_equals_base(make_tiny_llama):
    base = logits(make_tiny_llama())
    prepared = bitfit(make_tiny_llama())
    assert torch.equal(logits(prepared.model), base)


def test_only_biases_trainable(make_tiny_llama):
    model = bitfit(make_tiny_llama()).model
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(".bias") for n in trainable)
    assert len(trainable) == 14
    assert methods.count_parameters(model)[0] == LAYERS * sum(OUT.values()) == 512


def test_training_moves_biases_only(make_tiny_llama):
    model = bitfit(make_tiny_llama()).model
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lm_steps(model)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    bias_keys = {k for k in before if k.endswith(".bias")}
    assert changed == bias_keys  # every bias moved; all weights bit-identical
    assert all(p.grad is None for n, p in model.named_parameters() if not n.endswith(".bias"))


def test_save_writes_exactly_the_biases(make_tiny_llama, tmp_path):
    prepared = bitfit(make_tiny_llama())
    lm_steps(prepared.model, n=1)
    prepared.save(str(tmp_path / "ckpt"))
    saved = load_file(str(tmp_path / "ckpt" / "bitfit_biases.safetensors"))
    trainable = {n: p for n, p in prepared.model.named_parameters() if p.requires_grad}
    assert set(saved) == set(trainable) == {f"{n}.bias" for n, _ in projections(prepared.model)}
    assert all(torch.equal(saved[k], trainable[k].detach()) for k in saved)
    meta = json.loads((tmp_path / "ckpt" / "bitfit_config.json").read_text())
    assert meta == {"targets": list(PROJ), "added_zero_biases": 14}


def test_existing_biases_are_trained_not_readded(make_tiny_llama):
    model = make_tiny_llama(attention_bias=True)
    with torch.no_grad():  # make the existing biases distinguishable from fresh zeros
        for n, p in model.named_parameters():
            if n.endswith(".bias"):
                p.normal_(std=0.1)
    existing = {n: (p, p.detach().clone()) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert len(existing) == 4 * LAYERS  # q, k, v, o per layer
    base = logits(model)

    prepared = bitfit(model)
    assert prepared.notes["bitfit_existing_biases"] == 4 * LAYERS
    assert prepared.notes["bitfit_added_zero_biases"] == 3 * LAYERS  # gate, up, down
    params = dict(model.named_parameters())
    for n, (p, value) in existing.items():
        assert params[n] is p and torch.equal(p, value) and p.requires_grad  # same object, untouched
    for i in range(LAYERS):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            b = params[f"model.layers.{i}.mlp.{proj}.bias"]
            assert torch.count_nonzero(b) == 0 and b.requires_grad
    assert torch.equal(logits(model), base)
    assert sum(p.requires_grad for p in model.parameters()) == 7 * LAYERS


def test_targets_restrict_added_biases(make_tiny_llama):
    model = make_tiny_llama()
    prepared = bitfit(model, bitfit_targets=["q_proj", "down_proj"])
    assert prepared.notes["bitfit_added_zero_biases"] == 2 * LAYERS
    have = {n.rsplit(".", 2)[-2] for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert have == {"q_proj", "down_proj"}


def test_nothing_to_train_raises(make_tiny_llama):
    with pytest.raises(ConfigError, match="bitfit"):
        bitfit(make_tiny_llama(), bitfit_targets=["no_such_proj"])


def test_bf16_model_runs_without_autocast(make_tiny_llama):
    base_model = make_tiny_llama().to(torch.bfloat16)
    base = logits(base_model)
    prepared = bitfit(make_tiny_llama().to(torch.bfloat16))
    assert torch.equal(logits(prepared.model), base)  # evaluate.py runs the model without autocast


def run_fresh(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (the method registry is process state)."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def test_unknown_method_lists_methods():
    proc = run_fresh("""
        from harness import methods
        from harness.errors import ConfigError
        try:
            methods.get("bitfitt")
        except ConfigError as exc:
            print("MSG", exc)
        """)
    assert proc.returncode == 0, proc.stderr
    msg = proc.stdout.split("MSG", 1)[1]
    assert "'bitfitt'" in msg and "did you mean bitfit?" in msg
    listed = msg.split("one of", 1)[1].strip().split(", ")
    for name in ("bitfit", "adapter_series", "adapter_parallel", "lora", "dora", "full", "none"):
        assert name in listed


def test_unknown_method_in_process():
    with pytest.raises(ConfigError, match="unknown method 'bitfitt' .did you mean bitfit.*one of .*bitfit"):
        methods.get("bitfitt")


def test_registry_complete_after_direct_module_import():
    proc = run_fresh("""
        import harness.methods.bottleneck
        from harness import methods
        methods.get("bitfit")
        methods.get("lora")
        """)
    assert proc.returncode == 0, proc.stderr[-2000:]
