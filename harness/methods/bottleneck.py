"""Bottleneck adapters (series and parallel), written here because peft has none and the
`adapters` library does not support transformers 5.

Each adapter is down-projection -> non-linearity -> up-projection, times a scaling factor:
- series (AdapterH-style, LLM-Adapters' "Series"): after each decoder layer's MLP, h = m + A(m), m = MLP(x);
- parallel (He et al. 2022, LLM-Adapters' "Parallel"): beside each MLP, h = MLP(x) + A(x).
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
    def __init__(self, hidden: int, size: int, non_linearity: str, dropout: float, scaling: float,
                 init_weights: str):
        super().__init__()
        if non_linearity not in ACT2FN:
            raise ConfigError(f"unknown adapter non_linearity '{non_linearity}'; e.g. tanh, relu, gelu, silu")
        self.adapter_down = nn.Linear(hidden, size, bias=False)
        self.adapter_up = nn.Linear(size, hidden, bias=False)
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


WRAPPERS = {"series": SeriesAdapterMLP, "parallel": ParallelAdapterMLP}


def _hidden_size(model) -> int:
    cfg = model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    return cfg.hidden_size


def add_adapters(model: nn.Module, kind: str, bottleneck_size: int, non_linearity: str = "tanh",
                 dropout: float = 0.0, scaling: float = 1.0, init_weights: str = "bert") -> int:
    """Wrap every decoder layer's `mlp` with an adapter; freeze everything else. Returns the count."""
    if kind not in WRAPPERS:
        raise ConfigError(f"unknown adapter kind '{kind}'; use series or parallel")
    hidden = _hidden_size(model)
    wrapped = tuple(WRAPPERS.values())
    if any(isinstance(m, wrapped) for m in model.modules()):
        raise ConfigError("this model already has bottleneck adapters")
    targets = [name for name, mod in model.named_modules() if name.rsplit(".", 1)[-1] == "mlp"]
    if not targets:
        raise ConfigError(f"{type(model).__name__} has no '.mlp' submodules to attach bottleneck adapters to")
    # build every adapter first: a bad argument fails before the model is touched
    adapters = [BottleneckAdapter(hidden, bottleneck_size, non_linearity, dropout, scaling, init_weights)
                for _ in targets]
    freeze(model)
    device = next(model.parameters()).device
    for name, adapter in zip(targets, adapters):
        parent_name, child = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, child, WRAPPERS[kind](getattr(parent, child), adapter.to(device)))
    return len(targets)


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
    hidden, size = _hidden_size(model), cfg["bottleneck_size"]
    shapes = {}
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] == "mlp":
            shapes[f"{name}.adapter.adapter_down.weight"] = (size, hidden)
            shapes[f"{name}.adapter.adapter_up.weight"] = (hidden, size)
    return shapes


def _bottleneck(kind: str):
    def method(model, cfg, ctx) -> Prepared:
        a = cfg.adapter
        config = dict(kind=kind, bottleneck_size=a.bottleneck_size, non_linearity=a.non_linearity,
                      dropout=a.dropout, scaling=a.scaling, init_weights=str(a.init_weights))
        n = add_adapters(model, **config)
        return Prepared(model=model, save=lambda out_dir: save_adapters(model, out_dir, config),
                        notes={"adapters_added": n, "placement": "after MLP" if kind == "series" else "beside MLP"})
    return method


for _kind in WRAPPERS:
    register(Method(name=f"adapter_{_kind}", build=_bottleneck(_kind), load=load_adapters, family="adapter",
                    sections=("adapter",)))
