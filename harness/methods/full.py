"""Full fine-tuning, and method=none (base-model evaluation)."""
from pathlib import Path

from harness.methods import Method, Prepared, freeze, register


def _build_full(model, cfg, ctx) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    return Prepared(model=model, save=lambda out_dir: model.save_pretrained(Path(out_dir), safe_serialization=True))


def _load_full(model, checkpoint_dir: str):
    """The saved model replaces the base entirely (same architecture, every weight trained)."""
    from transformers import AutoModelForCausalLM
    param = next(model.parameters())
    return AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=param.dtype).to(param.device)


def _build_none(model, cfg, ctx) -> Prepared:
    freeze(model)
    return Prepared(model=model, save=lambda out_dir: None, notes={"base_model_only": True})


register(Method(name="full", build=_build_full, load=_load_full, family="full", frozen_base=False))
register(Method(name="none", build=_build_none, load=lambda model, checkpoint_dir: model, family="base",
                trains=False))
