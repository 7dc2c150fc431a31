"""Bottleneck adapters (series and parallel), written here because peft has none and the
`adapters` library does not support transformers 5.

Each adapter is down-projection -> non-linearity -> up-projection, times a scaling factor. Where
adapters go is `method.adapter.target_modules`:
- `mlp` (the default): one per decoder layer's MLP block. Series (LLM-Adapters' "Series", AdapterP):
  after it, h = m + A(m), m = MLP(x); parallel (He et al. 2022): beside it, h = MLP(x) + A(x).
- names of linear layers (`up_proj`, `down_proj`, `gate_proj`): one per matching layer, placed as
  LLM-Adapters' bottleneck tuner places them (peft/src/peft/tuners/bottleneck.py). Parallel: y =
  W x + A(x), A from the layer's input to its output width (its Parallel command targets up_proj and
  down_proj). Series on a layer that feeds the MLP (gate_proj, up_proj): y = W (x + A(x)), before it
  ("mh_adapter"); on the layer that leaves it (down_proj): y = W x + A(W x), after it ("output_adapter").
Initialisation "bert" (normal, std 0.02, LLM-Adapters' default) or "zero" (up-projection zero, so
step 0 reproduces the base model). The base model is frozen; only adapter_* parameters train.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.activations import ACT2FN

from harness.errors import ConfigError
from harness.methods import Method, Prepared, freeze, register, save_tensors

WEIGHTS = "bottleneck_adapters.safetensors"
CONFIG = "bottleneck_config.json"


class BottleneckAdapter(nn.Module):
    def __init__(self, width_in: int, size: int, non_linearity: str, dropout: float, scaling: float,
                 init_weights: str, width_out: int | None = None):
        super().__init__()
        if non_linearity not in ACT2FN:
            raise ConfigError(f"unknown adapter non_linearity '{non_linearity}'; e.g. tanh, relu, gelu, silu")
        self.adapter_down = nn.Linear(width_in, size, bias=False)
        self.adapter_up = nn.Linear(size, width_out or width_in, bias=False)
        self.act = ACT2FN[non_linearity]
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = scaling
        if init_weights == "bert":
            nn.init.normal_(self.adapter_down.weight, std=0.02)
            nn.init.normal_(self.adapter_up.weight, std=0.02)
        elif init_weights == "zero":
            nn.init.kaiming_uniform_(self.adapter_down.weight, a=5 ** 0.5)
            nn.init.zeros_(self.adapter_up.weight)
        else:
            raise ConfigError(f"unknown adapter init_weights '{init_weights}'; use bert or zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # adapters keep fp32 weights; compute in their dtype (autocast lowers it on GPU)
        h = self.adapter_up(self.act(self.adapter_down(self.dropout(x.to(self.adapter_down.weight.dtype)))))
        return (h * self.scaling).to(x.dtype)


class SeriesAdapterMLP(nn.Module):
    def __init__(self, mlp: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.mlp, self.adapter = mlp, adapter

    def forward(self, x, *args, **kwargs):
        m = self.mlp(x, *args, **kwargs)
        return m + self.adapter(m)


class ParallelAdapterMLP(nn.Module):
    def __init__(self, mlp: nn.Module, adapter: BottleneckAdapter):
        super().__init__()
        self.mlp, self.adapter = mlp, adapter

    def forward(self, x, *args, **kwargs):
        return self.mlp(x, *args, **kwargs) + self.adapter(x)


class AdaptedLinear(nn.Module):
    """One linear layer with an adapter before it ("input"), after it ("output") or beside it ("parallel")."""

    def __init__(self, linear: nn.Linear, adapter: BottleneckAdapter, where: str):
        super().__init__()
        self.linear, self.adapter, self.where = linear, adapter, where

    def forward(self, x):
        if self.where == "input":
            return self.linear(x + self.adapter(x))
        y = self.linear(x)
        return y + self.adapter(y if self.where == "output" else x)


WRAPPERS = {"series": SeriesAdapterMLP, "parallel": ParallelAdapterMLP}
# series adapters on a linear layer: before the layers that feed the MLP, after the one that leaves it
# (LLM-Adapters' TRANSFORMERS_MODELS_TO_ADAPTER_TYPE_MAPPING for llama)
SERIES_SIDE = {"gate_proj": "input", "up_proj": "input", "down_proj": "output"}


def _hidden_size(model) -> int:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    return cfg.hidden_size


def side_and_widths(kind: str, target: str, in_features: int, out_features: int) -> tuple[str, int, int]:
    """Where an adapter of `kind` goes on the linear layer `target` (input | output | parallel), and
    its input and output widths; the one rule that the method and the VRAM estimate both follow."""
    if kind == "series" and target not in SERIES_SIDE:
        raise ConfigError(f"method.adapter.target_modules: a series adapter on {target!r} has no defined side; "
                          f"use mlp or {', '.join(SERIES_SIDE)} (before gate/up, after down, as LLM-Adapters)")
    where = SERIES_SIDE[target] if kind == "series" else "parallel"
    width_in = out_features if where == "output" else in_features
    width_out = in_features if where == "input" else out_features
    return where, width_in, width_out


def placements(model: nn.Module, kind: str, target_modules=("mlp",)) -> list[tuple[str, int, int, str]]:
    """(module name, adapter input width, adapter output width, where: mlp | input | output | parallel)
    of every adapter `kind` puts on `model` for `target_modules`; ConfigError naming the fix when a
    target cannot take one."""
    if kind not in WRAPPERS:
        raise ConfigError(f"unknown adapter kind '{kind}'; use series or parallel")
    out = []
    for target in target_modules:
        found = [(n, m) for n, m in model.named_modules() if n.rsplit(".", 1)[-1] == target]
        if not found:
            raise ConfigError(f"method.adapter.target_modules: {target!r} names no module of {type(model).__name__}")
        if target == "mlp":
            hidden = _hidden_size(model)
            out += [(name, hidden, hidden, "mlp") for name, _ in found]
            continue
        side_and_widths(kind, target, 0, 0)  # a series target without a side fails before any module
        for name, module in found:
            if not isinstance(module, nn.Linear):
                raise ConfigError(f"method.adapter.target_modules: {name} is a {type(module).__name__}, not a "
                                  f"linear layer; name linear layers (up_proj, down_proj, ...) or mlp")
            where, width_in, width_out = side_and_widths(kind, target, module.in_features, module.out_features)
            out.append((name, width_in, width_out, where))
    return out


def add_adapters(model: nn.Module, kind: str, bottleneck_size: int, non_linearity: str = "tanh",
                 dropout: float = 0.0, scaling: float = 1.0, init_weights: str = "bert",
                 target_modules=("mlp",)) -> int:
    """An adapter on every module `target_modules` names (see the module doc); freeze everything
    else. Returns the count. Saved configs without target_modules (written before it existed) are mlp."""
    wrapped = (*WRAPPERS.values(), AdaptedLinear)
    if any(isinstance(m, wrapped) for m in model.modules()):
        raise ConfigError("this model already has bottleneck adapters")
    where = placements(model, kind, target_modules)
    # build every adapter first: a bad argument fails before the model is touched
    adapters = [BottleneckAdapter(width_in, bottleneck_size, non_linearity, dropout, scaling, init_weights, width_out)
                for _, width_in, width_out, _ in where]
    freeze(model)
    device = next(model.parameters()).device
    for (name, _, _, side), adapter in zip(where, adapters):
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        module, adapter = getattr(parent, child), adapter.to(device)
        setattr(parent, child, WRAPPERS[kind](module, adapter) if side == "mlp" else AdaptedLinear(module, adapter, side))
    return len(where)


def adapter_state_dict(model: nn.Module) -> dict:
    return {k: v for k, v in model.state_dict().items() if ".adapter.adapter_" in k}


def save_adapters(model: nn.Module, out_dir: str, config: dict) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(adapter_state_dict(model), str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps(config, indent=1))


def load_adapters(model: nn.Module, in_dir: str) -> nn.Module:
    """Attach adapters described by `in_dir` to a base model and load their weights (strict)."""
    from safetensors.torch import load_file
    cfg = json.loads((Path(in_dir) / CONFIG).read_text())
    weights = load_file(str(Path(in_dir) / WEIGHTS))
    # check names and shapes on a throwaway copy of the module tree before touching the model
    probe = _adapter_shapes(model, cfg)
    got = {k: tuple(v.shape) for k, v in weights.items()}
    if got != probe:
        missing, unexpected = sorted(set(probe) - set(got))[:3], sorted(set(got) - set(probe))[:3]
        wrong = [k for k in set(got) & set(probe) if got[k] != probe[k]][:3]
        raise ConfigError(f"{in_dir}: adapter weights do not fit this model (missing {missing}, "
                          f"unexpected {unexpected}, wrong shape {wrong}); was it saved from another base model?")
    add_adapters(model, **cfg)
    model.load_state_dict(weights, strict=False)
    return model


def _adapter_shapes(model: nn.Module, cfg: dict) -> dict:
    """Names and shapes the adapters described by `cfg` would have on `model`."""
    size, shapes = cfg["bottleneck_size"], {}
    for name, width_in, width_out, _ in placements(model, cfg["kind"], cfg.get("target_modules", ("mlp",))):
        shapes[f"{name}.adapter.adapter_down.weight"] = (size, width_in)
        shapes[f"{name}.adapter.adapter_up.weight"] = (width_out, size)
    return shapes


_WORDS = {"series": "after", "parallel": "beside", "input": "before", "output": "after"}


def placed_on(kind: str, target_modules) -> str:
    """Where the adapters went, in words (the record's method notes): 'after MLP', 'beside up_proj, beside down_proj'."""
    def side(target: str) -> str:
        return kind if target == "mlp" else side_and_widths(kind, target, 0, 0)[0]
    return ", ".join(f"{_WORDS[side(t)]} {'MLP' if t == 'mlp' else t}" for t in target_modules)


def _bottleneck(kind: str):
    def method(model, cfg, ctx) -> Prepared:
        a = cfg.adapter
        config = dict(kind=kind, bottleneck_size=a.bottleneck_size, non_linearity=a.non_linearity,
                      dropout=a.dropout, scaling=a.scaling, init_weights=str(a.init_weights),
                      target_modules=list(a.target_modules))
        n = add_adapters(model, **config)
        return Prepared(model=model, save=lambda out_dir: save_adapters(model, out_dir, config),
                        notes={"adapters_added": n, "placement": placed_on(kind, config["target_modules"])})
    return method


KINDS = {f"adapter_{kind}": kind for kind in WRAPPERS}  # method name -> kind
for _kind in WRAPPERS:
    register(Method(name=f"adapter_{_kind}", build=_bottleneck(_kind), load=load_adapters, family="adapter",
                    sections=("adapter",)))
