"""Methods peft implements: each is peft's config class filled from `method.peft` (keyword
arguments named as peft names them), wrapped with get_peft_model, saved and loaded by peft."""
from __future__ import annotations

from harness.methods import Method, Prepared, register


def peft_config(class_name: str, cfg, ctx=None):
    """peft's config object for this method config (unknown keys are refused by harness.validate first)."""
    import peft

    from harness.validate import peft_arguments
    valid = peft_arguments(class_name)  # a key only another method's class takes is not for this run
    kwargs = {"task_type": "CAUSAL_LM", **{k: v for k, v in cfg.peft.items() if k in valid}}
    for key, value in list(kwargs.items()):  # OmegaConf lists -> plain lists (peft stores them as given)
        if hasattr(value, "__iter__") and not isinstance(value, (str, dict)):
            kwargs[key] = list(value)
    if str(kwargs.get("prompt_tuning_init", "")).upper() == "TEXT" and ctx is not None:
        kwargs.setdefault("tokenizer_name_or_path", ctx.model_ref)  # the base's own tokenizer
    return getattr(peft, class_name)(**kwargs)


def build_with(class_name: str):
    def build(model, cfg, ctx) -> Prepared:
        from peft import get_peft_model
        pm = get_peft_model(model, peft_config(class_name, cfg, ctx))
        return Prepared(model=pm, save=lambda out_dir: pm.save_pretrained(out_dir, safe_serialization=True))
    return build


def load_peft(model, checkpoint_dir: str):
    from peft import PeftModel
    return PeftModel.from_pretrained(model, checkpoint_dir)


def peft_method(name: str, class_name: str, family: str, **kwargs) -> Method:
    """A registry entry for a method peft implements with `class_name`."""
    return register(Method(name=name, build=build_with(class_name), load=load_peft, family=family,
                           peft_config=class_name, sections=("peft",) + kwargs.pop("sections", ()), **kwargs))


# LoRA family: one builder; the YAML says which variant (use_dora, a quantised base, ...).
# method=lora method.quantization.bits=4 is QLoRA done the same way as method=qlora4.
LORA = dict(sections=("quantization",), merges_for_eval=True)
peft_method("lora", "LoraConfig", "lora", quantization="optional", **LORA)
peft_method("dora", "LoraConfig", "lora", quantization="optional", **LORA)
peft_method("qlora4", "LoraConfig", "lora", quantization="required", quantization_bits=(4,), **LORA)
peft_method("qlora8", "LoraConfig", "lora", quantization="required", quantization_bits=(8,), **LORA)
peft_method("prompt_tuning", "PromptTuningConfig", "prompt")
