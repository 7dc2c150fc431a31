"""Full fine-tuning, and method=none (base-model evaluation)."""
from pathlib import Path

from harness.methods import Prepared, freeze, register


def _save_full(model):
    def save(out_dir: str) -> None:
        model.save_pretrained(Path(out_dir), safe_serialization=True)
    return save


@register("full")
def full(model, cfg, ctx) -> Prepared:
    for p in model.parameters():
        p.requires_grad_(True)
    if ctx.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return Prepared(model=model, save=_save_full(model))


@register("none")
def none(model, cfg, ctx) -> Prepared:
    freeze(model)
    return Prepared(model=model, save=lambda out_dir: None, trains=False, notes={"base_model_only": True})
