"""Fine-tuning methods: one small function per method behind a registry.

A method function takes the loaded base model, its MethodConfig and a MethodContext, and returns
a Prepared: the model to train (base frozen where the method says so), notes for the record, and
a function that saves the method's weights as safetensors. conf/method/<name>.yaml selects it by
`name`; quantisation of the base is declared in the YAML and applied at load time.
Every module in this package is imported on first lookup, so a new method is one file + one YAML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from harness.errors import ConfigError
from harness.registry import import_package_modules


@dataclass
class MethodContext:
    tokenizer: object
    model_ref: str  # what from_pretrained was given (for tokenizer-based initialisations)
    device: torch.device
    gradient_checkpointing: bool = False


@dataclass
class Prepared:
    model: torch.nn.Module
    save: Callable[[str], None]
    notes: dict = field(default_factory=dict)
    trains: bool = True  # False for method=none


METHODS: dict[str, Callable] = {}


def register(name: str):
    def deco(fn):
        METHODS[name] = fn
        return fn
    return deco


def _load_all() -> None:
    import_package_modules(__name__)


def get_method(name: str) -> Callable:
    _load_all()
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'; choose method= one of {sorted(METHODS)}")
    return METHODS[name]


def apply(model, cfg, ctx: MethodContext) -> Prepared:
    return get_method(cfg.name)(model, cfg, ctx)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; 4-bit packed weights count as the values they hold."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":  # two 4-bit values per byte of storage
            n *= 2 * (p.quant_storage.itemsize if hasattr(p, "quant_storage") else 1)
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def freeze(model: torch.nn.Module) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def save_tensors(tensors: dict, path: str, metadata: dict | None = None) -> None:
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path,
              metadata={k: str(v) for k, v in (metadata or {}).items()})
