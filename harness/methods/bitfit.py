"""BitFit (Ben Zaken et al. 2022): only bias terms train.

LLaMA-family models (LLaMA, SmolLM2, Gemma) have no biases in their projections; BitFit on them
would train nothing. We add zero-initialised biases to the projections named in
method.bitfit_targets, so the model at step 0 computes exactly what the base model does, and the
record says how many biases were added and how many existed.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from harness.errors import ConfigError
from harness.methods import Method, Prepared, freeze, register, save_tensors

WEIGHTS = "bitfit_biases.safetensors"


def add_zero_biases(model: nn.Module, targets) -> tuple[int, int]:
    """Give every bias-free nn.Linear whose name ends in one of `targets` a zero bias."""
    added = existing = 0
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear) or name.rsplit(".", 1)[-1] not in targets:
            continue
        if module.bias is None:
            # same dtype as the weight: evaluation runs without autocast, and F.linear needs one dtype
            dtype = module.weight.dtype if module.weight.dtype.is_floating_point else torch.float32
            module.bias = nn.Parameter(torch.zeros(module.out_features, device=module.weight.device, dtype=dtype))
            added += 1
        else:
            existing += 1
    return added, existing


def bias_state_dict(model: nn.Module) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def bitfit(model, cfg, ctx) -> Prepared:
    freeze(model)
    added, existing = add_zero_biases(model, set(cfg.bitfit_targets))
    n_trainable = 0
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.requires_grad_(True)
            n_trainable += 1
    if n_trainable == 0:
        raise ConfigError("bitfit found no bias terms and none of method.bitfit_targets matched a Linear layer")

    def save(out_dir: str) -> None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_tensors(bias_state_dict(model), str(Path(out_dir) / WEIGHTS))
        (Path(out_dir) / "bitfit_config.json").write_text(json.dumps(
            {"targets": list(cfg.bitfit_targets), "added_zero_biases": added}, indent=1))

    return Prepared(model=model, save=save, notes={
        "bitfit_added_zero_biases": added, "bitfit_existing_biases": existing,
        "bitfit_note": "zero-initialised biases added to bias-free projections; step 0 equals the base model"
        if added else "model's own biases trained"})


def load_bitfit(model: nn.Module, in_dir: str) -> nn.Module:
    """Add the saved biases to a base model (the same zero biases first, where it had none)."""
    from safetensors.torch import load_file
    meta = json.loads((Path(in_dir) / "bitfit_config.json").read_text())
    add_zero_biases(model, set(meta["targets"]))
    weights = load_file(str(Path(in_dir) / WEIGHTS))
    missing = sorted(set(weights) - {n for n, _ in model.named_parameters()})
    if missing:
        raise ConfigError(f"{in_dir}: biases {missing[:3]} do not exist in this model; saved from another base?")
    model.load_state_dict(weights, strict=False)
    return model


register(Method(name="bitfit", build=bitfit, load=load_bitfit, family="selective", sections=("bitfit_targets",)))
