"""Bottleneck adapters (series / parallel) on a tiny LLaMA: placement, freezing, initialisation,
the exact forward computation, training, save/load, and error handling."""
from __future__ import annotations

import importlib
import json
import pkgutil

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers.models.llama.modeling_llama import LlamaMLP

from harness import methods
from harness.config import MethodConfig
from harness.errors import ConfigError

# Import every method module before using harness.methods.bottleneck directly, so the registry stays
# complete for all tests (see test_bitfit.py).
for _mod in pkgutil.iter_modules(methods.__path__):
    importlib.import_module(f"{methods.__name__}.{_mod.name}")

from harness.methods.bottleneck import (ParallelAdapterMLP, SeriesAdapterMLP, add_adapters,  # noqa: E402
                                        adapter_state_dict, load_adapters, save_adapters)

LAYERS, HIDDEN, SIZE = 2, 32, 4
WRAPPER = {"series": SeriesAdapterMLP, "parallel": ParallelAdapterMLP}
KINDS = ["series", "parallel"]


def ids(seed=1, shape=(2, 9)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 64, shape, generator=g)


@torch.no_grad()
def logits(model, x=None):
    return model(input_ids=ids() if x is None else x).logits


def method_cfg(name, **adapter):
    cfg = OmegaConf.structured(MethodConfig(name=name))
    for k, v in adapter.items():
        cfg.adapter[k] = v
    return cfg


def ctx():
    return methods.MethodContext(tokenizer=None, model_ref="", device=torch.device("cpu"))


def lm_steps(model, n=3, lr=1e-2):
    """n AdamW steps on the LM loss; the optimiser sees *all* parameters, so a leak would show."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    x = ids(seed=2, shape=(4, 12))
    for _ in range(n):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    model.eval()


# ---- placement and freezing ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_wraps_every_layer_mlp(make_tiny_llama, kind):
    model = make_tiny_llama()
    assert add_adapters(model, kind, SIZE) == LAYERS
    for layer in model.model.layers:
        assert isinstance(layer.mlp, WRAPPER[kind])
        assert isinstance(layer.mlp.mlp, LlamaMLP)  # the original MLP, wrapped once
    wrappers = [m for m in model.modules() if isinstance(m, (SeriesAdapterMLP, ParallelAdapterMLP))]
    assert len(wrappers) == LAYERS


@pytest.mark.parametrize("kind", KINDS)
def test_only_adapters_train(make_tiny_llama, kind):
    model = make_tiny_llama()
    total_before = sum(p.numel() for p in model.parameters())
    add_adapters(model, kind, SIZE)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".adapter.adapter_" in n for n in trainable)
    assert all(not p.requires_grad for n, p in model.named_parameters() if ".adapter." not in n)
    assert len(trainable) == LAYERS * 2
    n_train, n_total = methods.count_parameters(model)
    assert n_train == LAYERS * 2 * HIDDEN * SIZE == 512
    assert n_total == total_before + n_train


# ---- initialisation --------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_zero_init_reproduces_base(make_tiny_llama, kind):
    base = logits(make_tiny_llama())
    model = make_tiny_llama()
    add_adapters(model, kind, SIZE, init_weights="zero")
    for layer in model.model.layers:
        assert torch.count_nonzero(layer.mlp.adapter.adapter_up.weight) == 0
        assert torch.count_nonzero(layer.mlp.adapter.adapter_down.weight) > 0
    assert torch.equal(logits(model), base)


@pytest.mark.parametrize("kind", KINDS)
def test_bert_init_changes_output(make_tiny_llama, kind):
    base = logits(make_tiny_llama())
    model = make_tiny_llama()
    add_adapters(model, kind, SIZE, init_weights="bert")
    assert not torch.equal(logits(model), base)
    # and with the up-projection zeroed, the adapter contributes nothing
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.adapter.adapter_up.weight.zero_()
    assert torch.equal(logits(model), base)


@pytest.mark.parametrize("kind", KINDS)
def test_init_is_seed_deterministic(make_tiny_llama, kind):
    a, b = make_tiny_llama(), make_tiny_llama()
    torch.manual_seed(5)
    add_adapters(a, kind, SIZE)
    torch.manual_seed(5)
    add_adapters(b, kind, SIZE)
    sa, sb = adapter_state_dict(a), adapter_state_dict(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---- the computation -------------------------------------------------------------------------

@pytest.mark.parametrize("scaling", [1.0, 2.5])
def test_series_and_parallel_formulas(make_tiny_llama, scaling):
    x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(3))
    out = {}
    for kind in KINDS:
        model = make_tiny_llama()
        torch.manual_seed(7)
        add_adapters(model, kind, SIZE, non_linearity="tanh", scaling=scaling, init_weights="bert")
        wrapper = model.model.layers[0].mlp
        mlp, down, up = wrapper.mlp, wrapper.adapter.adapter_down, wrapper.adapter.adapter_up
        with torch.no_grad():
            m = mlp(x)
            if kind == "series":  # adapter after the MLP, on its output
                expected = m + scaling * up(torch.tanh(down(m)))
            else:  # adapter beside the MLP, on its input
                expected = m + scaling * up(torch.tanh(down(x)))
            out[kind] = wrapper(x)
        torch.testing.assert_close(out[kind], expected, rtol=0, atol=1e-6)
    assert not torch.allclose(out["series"], out["parallel"])


def test_non_linearity_is_used(make_tiny_llama):
    x = torch.randn(2, 5, HIDDEN, generator=torch.Generator().manual_seed(3))
    model = make_tiny_llama()
    add_adapters(model, "parallel", SIZE, non_linearity="relu")
    w = model.model.layers[1].mlp
    with torch.no_grad():
        expected = w.mlp(x) + w.adapter.adapter_up(torch.relu(w.adapter.adapter_down(x)))
        torch.testing.assert_close(w(x), expected, rtol=0, atol=1e-6)


# ---- training --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_training_moves_adapters_only(make_tiny_llama, kind):
    model = make_tiny_llama()
    add_adapters(model, kind, SIZE, init_weights="zero")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    lm_steps(model)
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    adapter_keys = {k for k in before if ".adapter.adapter_" in k}
    assert changed == adapter_keys  # every adapter matrix moved, nothing else did (bit-identical)
    assert all(p.grad is None for n, p in model.named_parameters() if ".adapter." not in n)


# ---- save / load -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_save_load_roundtrip(make_tiny_llama, kind, tmp_path):
    model = make_tiny_llama()
    config = dict(kind=kind, bottleneck_size=SIZE, non_linearity="tanh", dropout=0.0, scaling=1.0,
                  init_weights="zero")
    add_adapters(model, **config)
    lm_steps(model, n=2)  # non-trivial adapter weights
    trained = logits(model)
    assert not torch.equal(trained, logits(make_tiny_llama()))
    save_adapters(model, str(tmp_path), config)

    saved = load_file(str(tmp_path / "bottleneck_adapters.safetensors"))
    assert set(saved) == {f"model.layers.{i}.mlp.adapter.adapter_{p}.weight"
                          for i in range(LAYERS) for p in ("down", "up")}
    assert json.loads((tmp_path / "bottleneck_config.json").read_text()) == config

    fresh = load_adapters(make_tiny_llama(), str(tmp_path))
    assert torch.equal(logits(fresh), trained)


@pytest.mark.parametrize("layers", [1, 3])
def test_load_into_model_with_other_layer_count(make_tiny_llama, tmp_path, layers):
    model = make_tiny_llama()
    config = dict(kind="series", bottleneck_size=SIZE)
    add_adapters(model, **config)
    save_adapters(model, str(tmp_path), config)
    with pytest.raises(ConfigError, match="do not fit"):
        load_adapters(make_tiny_llama(num_hidden_layers=layers), str(tmp_path))


def test_load_into_model_with_other_hidden_size(make_tiny_llama, tmp_path):
    model = make_tiny_llama()
    config = dict(kind="series", bottleneck_size=SIZE)
    add_adapters(model, **config)
    save_adapters(model, str(tmp_path), config)
    with pytest.raises(ConfigError):
        load_adapters(make_tiny_llama(hidden_size=48), str(tmp_path))


# ---- bad settings ----------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(kind="series", non_linearity="tanhh"), "non_linearity"),
    (dict(kind="parallel", non_linearity="nope"), "non_linearity"),
    (dict(kind="series", init_weights="xavier"), "init_weights"),
    (dict(kind="scaled_parallel"), "kind"),
])
def test_bad_settings_raise_config_error(make_tiny_llama, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        add_adapters(make_tiny_llama(), bottleneck_size=SIZE, **kwargs)


def test_registry_bad_non_linearity(make_tiny_llama):
    with pytest.raises(ConfigError, match="non_linearity"):
        methods.get("adapter_series").build(make_tiny_llama(), method_cfg("adapter_series", non_linearity="swishy"),
                                             ctx())


# ---- through the method registry -------------------------------------------------------------

def test_registry_defaults_are_llm_adapters():
    a = OmegaConf.structured(MethodConfig(name="adapter_series")).adapter
    assert (a.bottleneck_size, a.non_linearity, a.dropout, a.scaling, a.init_weights) == (256, "tanh", 0.0, 1.0, "bert")


@pytest.mark.parametrize("name,kind,placement", [("adapter_series", "series", "after MLP"),
                                                 ("adapter_parallel", "parallel", "beside MLP")])
def test_registry_method(make_tiny_llama, tmp_path, name, kind, placement):
    base = logits(make_tiny_llama())
    prepared = methods.get(name).build(make_tiny_llama(), method_cfg(name, bottleneck_size=8), ctx())
    assert isinstance(prepared, methods.Prepared)
    assert prepared.notes == {"adapters_added": LAYERS, "placement": placement}
    model = prepared.model
    assert all(isinstance(layer.mlp, WRAPPER[kind]) for layer in model.model.layers)
    assert methods.count_parameters(model)[0] == LAYERS * 2 * HIDDEN * 8
    assert not torch.equal(logits(model), base)  # default init is "bert"

    prepared.save(str(tmp_path))
    assert json.loads((tmp_path / "bottleneck_config.json").read_text())["kind"] == kind
    fresh = load_adapters(make_tiny_llama(), str(tmp_path))
    assert torch.equal(logits(fresh), logits(model))


@pytest.mark.parametrize("name", ["adapter_series", "adapter_parallel"])
def test_registry_zero_init(make_tiny_llama, name):
    base = logits(make_tiny_llama())
    prepared = methods.apply(make_tiny_llama(), method_cfg(name, bottleneck_size=8, init_weights="zero"), ctx())
    assert torch.equal(logits(prepared.model), base)


# ---- adapters on linear layers, as LLM-Adapters places them --------------------------------------

def _reference(linear, down, up, x, where, scaling):
    """LLM-Adapters' bottleneck Linear.forward (peft/src/peft/tuners/bottleneck.py), written out:
    mh_adapter before the layer, output_adapter after it, parallel_adapter beside it."""
    adapter = (lambda h: up(torch.tanh(down(h))) * scaling)  # noqa: E731
    if where == "input":
        return torch.nn.functional.linear(x + adapter(x), linear.weight, linear.bias)
    y = torch.nn.functional.linear(x, linear.weight, linear.bias)
    return y + adapter(y if where == "output" else x)


@pytest.mark.parametrize("kind,targets,where", [
    ("parallel", ["up_proj", "down_proj"], {"up_proj": "parallel", "down_proj": "parallel"}),  # its Parallel command
    ("series", ["up_proj", "gate_proj"], {"up_proj": "input", "gate_proj": "input"}),  # its series command
    ("series", ["down_proj"], {"down_proj": "output"}),  # AdapterP
])
def test_adapters_on_linear_layers_compute_what_llm_adapters_computes(make_tiny_llama, kind, targets, where):
    from harness.methods.bottleneck import AdaptedLinear
    model = make_tiny_llama()
    torch.manual_seed(7)
    n = add_adapters(model, kind, SIZE, scaling=2.0, target_modules=targets)
    assert n == LAYERS * len(targets)
    mlp = model.model.layers[0].mlp
    for name, side in where.items():
        wrapped = getattr(mlp, name)
        assert isinstance(wrapped, AdaptedLinear) and wrapped.where == side
        width = wrapped.linear.out_features if side == "output" else wrapped.linear.in_features
        x = torch.randn(2, 5, wrapped.linear.in_features, generator=torch.Generator().manual_seed(3))
        assert wrapped.adapter.adapter_down.in_features == width
        with torch.no_grad():
            expected = _reference(wrapped.linear, wrapped.adapter.adapter_down, wrapped.adapter.adapter_up, x, side, 2.0)
            torch.testing.assert_close(wrapped(x), expected, rtol=0, atol=1e-6)


def test_parallel_adapters_beside_up_and_down_proj_train_save_and_load(make_tiny_llama, tmp_path):
    cfg = method_cfg("adapter_parallel", bottleneck_size=SIZE, target_modules=["up_proj", "down_proj"])
    prepared = methods.get("adapter_parallel").build(make_tiny_llama(), cfg, ctx())
    assert prepared.notes == {"adapters_added": 2 * LAYERS, "placement": "beside up_proj, beside down_proj"}
    model = prepared.model
    inter = model.model.layers[0].mlp.up_proj.linear.out_features
    # up_proj: hidden -> SIZE -> intermediate; down_proj: intermediate -> SIZE -> hidden
    assert methods.count_parameters(model)[0] == LAYERS * 2 * SIZE * (HIDDEN + inter)
    lm_steps(model)
    prepared.save(str(tmp_path))
    fresh = load_adapters(make_tiny_llama(), str(tmp_path))
    assert torch.equal(logits(fresh), logits(model))


@pytest.mark.parametrize("kind,targets,match", [
    ("series", ["q_proj"], "series adapter on 'q_proj' has no defined side"),
    ("parallel", ["nope"], "'nope' names no module"),
    ("parallel", ["self_attn"], "not a linear layer"),
])
def test_a_target_that_cannot_take_an_adapter_is_refused_before_the_model_changes(make_tiny_llama, kind, targets,
                                                                                   match):
    model = make_tiny_llama()
    before = logits(model)
    with pytest.raises(ConfigError, match=match):
        add_adapters(model, kind, SIZE, target_modules=targets)
    assert torch.equal(logits(model), before) and all(p.requires_grad for p in model.parameters())


def test_a_checkpoint_saved_before_target_modules_existed_loads_as_mlp(make_tiny_llama, tmp_path):
    model = make_tiny_llama()
    add_adapters(model, "parallel", SIZE)
    save_adapters(model, str(tmp_path), {"kind": "parallel", "bottleneck_size": SIZE, "non_linearity": "tanh",
                                         "dropout": 0.0, "scaling": 1.0, "init_weights": "bert"})
    fresh = load_adapters(make_tiny_llama(), str(tmp_path))
    assert isinstance(fresh.model.layers[0].mlp, ParallelAdapterMLP)
    assert torch.equal(logits(fresh), logits(model))
