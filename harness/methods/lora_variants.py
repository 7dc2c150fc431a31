"""LoRA variants that need more than a peft config class; peft does the method, this wires it in.

- PiSSA / OLoRA (LoraConfig init_lora_weights="pissa" / "olora"): peft initialises the adapter from
  a decomposition of each weight and leaves the residual in the base, so the adapter alone does not
  fit the original base. Saving converts it to an ordinary LoRA adapter of rank 2r on the original
  base (peft's path_initial_model_for_weight_conversion, which needs the adapter as initialised:
  kept in a temporary directory from build to save).
- LoRA+ (peft create_loraplus_optimizer): the registry's optimizer hook; its keyword arguments are
  the free-form method.optimizer section (loraplus_lr_ratio, ...).
- AdaLoRA (peft AdaLoraConfig): the rank-budget schedule needs the run's length (total_step, from
  MethodContext.total_steps) and model.base_model.update_and_allocate(step) after every optimizer
  step, before the gradients are cleared (the registry's after_step hook, harness.pipeline.train).
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from pathlib import Path

import torch

from harness.errors import ConfigError
from harness.methods import Prepared
from harness.methods.peft_methods import LORA, peft_config, peft_method, save_peft

# ---- PiSSA / OLoRA ---------------------------------------------------------------------------

INITIAL = "initial_adapter"  # peft names the temporary adapter after this directory


def _build_converting(model, cfg, ctx) -> Prepared:
    from peft import get_peft_model
    config = peft_config("LoraConfig", cfg, ctx)
    pm = get_peft_model(model, config)
    tmp = Path(tempfile.mkdtemp(prefix="peft-bench-"))
    initial = tmp / INITIAL
    pm.save_pretrained(str(initial), safe_serialization=True)  # the adapter as initialised
    weakref.finalize(pm, shutil.rmtree, tmp, True)  # removed with the model (or at exit)

    def save(out_dir: str) -> None:
        # trained minus initial adapter, as rank-2r LoRA on the unmodified base: loads with load_peft
        pm.save_pretrained(out_dir, safe_serialization=True, path_initial_model_for_weight_conversion=str(initial))

    return Prepared(model=pm, save=save, notes={
        "saved_as": f"LoRA rank {2 * config.r} on the original base (converted from {config.init_lora_weights})"})


# OLoRA dequantises a 4/8-bit weight, decomposes it and requantises the residual (peft olora_init);
# peft's PiSSA decomposes float weights only, so harness.config.checks refuses a quantised base for it.
for _name in ("pissa", "olora"):
    peft_method(_name, "LoraConfig", "lora", build=_build_converting,
                quantization="optional" if _name == "olora" else "none",
                **{**LORA, "sections": () if _name == "pissa" else LORA["sections"]})


# ---- LoRA+ -----------------------------------------------------------------------------------

ADAMW_KEYS = {"betas", "eps", "amsgrad"}
LORAPLUS_KEYS = {"loraplus_lr_ratio", "loraplus_lr_embedding"}


def _check_loraplus(opt: dict) -> None:
    unknown = sorted(set(opt) - ADAMW_KEYS - LORAPLUS_KEYS)
    if unknown:
        raise ConfigError(f"method.optimizer.{unknown[0]} is not an argument of peft's create_loraplus_optimizer "
                          f"(with AdamW); valid: {', '.join(sorted(LORAPLUS_KEYS | ADAMW_KEYS))}")
    if "loraplus_lr_ratio" not in opt or not float(opt["loraplus_lr_ratio"]) >= 1:
        raise ConfigError(f"method.optimizer.loraplus_lr_ratio={opt.get('loraplus_lr_ratio')} must be set and >= 1 "
                          f"(the ratio of B's learning rate to A's; the recipe's is 16)")


def _build_lora_plus(model, cfg, ctx) -> Prepared:
    _check_loraplus(dict(cfg.optimizer))  # before the model is wrapped: a typo costs nothing
    from peft import get_peft_model
    pm = get_peft_model(model, peft_config("LoraConfig", cfg, ctx))
    ratio = float(cfg.optimizer.loraplus_lr_ratio)
    return Prepared(model=pm, save=save_peft(pm), notes={"loraplus_lr_ratio": ratio,
                                                         "lr_B": cfg.lr * ratio})


def loraplus_optimizer(model, lr: float, weight_decay: float, cfg):
    """AdamW with B matrices (and 1-d vectors) at lr x loraplus_lr_ratio; train.weight_decay applies
    as in the default optimizer (peft's loraplus_weight_decay)."""
    from peft.optimizers import create_loraplus_optimizer
    opt = {k: (tuple(v) if k == "betas" else v) for k, v in dict(cfg.optimizer).items()}
    _check_loraplus(opt)
    cuda = all(p.is_cuda for p in model.parameters() if p.requires_grad)
    return create_loraplus_optimizer(model, torch.optim.AdamW, lr=lr, loraplus_weight_decay=weight_decay,
                                     fused=cuda, **opt)


peft_method("lora_plus", "LoraConfig", "lora", build=_build_lora_plus, optimizer=loraplus_optimizer,
            quantization="optional", **{**LORA, "sections": LORA["sections"] + ("optimizer",)})


# ---- AdaLoRA ---------------------------------------------------------------------------------

def _build_adalora(model, cfg, ctx) -> Prepared:
    from peft import get_peft_model
    steps = int(ctx.total_steps)
    tinit, tfinal = int(cfg.peft.get("tinit", 0)), int(cfg.peft.get("tfinal", 0))
    if steps <= 0 or tinit + tfinal >= steps:
        raise ConfigError(f"method=adalora: the rank budget needs a phase between method.peft.tinit ({tinit}) and "
                          f"the last method.peft.tfinal ({tfinal}) steps, but the run has {steps} optimizer steps; "
                          f"lower tinit/tfinal or train longer")
    pm = get_peft_model(model, peft_config("AdaLoraConfig", cfg, ctx, total_step=steps))
    return Prepared(model=pm, save=save_peft(pm), notes={"adalora_total_step": steps})


def adalora_after_step(model, step: int) -> None:
    """peft's budget update: importance from this step's gradients, then masking (AdaLoraModel)."""
    model.base_model.update_and_allocate(step)


peft_method("adalora", "AdaLoraConfig", "lora", build=_build_adalora, after_step=adalora_after_step,
            quantization="optional", **LORA)
