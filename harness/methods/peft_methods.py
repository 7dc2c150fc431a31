"""Methods peft provides: LoRA, DoRA, QLoRA (4- and 8-bit base) and prompt tuning."""
from __future__ import annotations

import warnings

from harness.methods import Prepared, register


def _lora_config(cfg):
    from peft import LoraConfig
    return LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), use_dora=cfg.lora.use_dora,
                      bias="none", task_type="CAUSAL_LM")


def _wrap(model, peft_config, ctx, notes=None) -> Prepared:
    from peft import get_peft_model
    if ctx.gradient_checkpointing and not getattr(model, "is_quantized", False):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    pm = get_peft_model(model, peft_config)
    return Prepared(model=pm, save=lambda out_dir: pm.save_pretrained(out_dir, safe_serialization=True),
                    notes=notes or {})


@register("lora")
def lora(model, cfg, ctx) -> Prepared:
    return _wrap(model, _lora_config(cfg), ctx)


@register("dora")
def dora(model, cfg, ctx) -> Prepared:
    lcfg = _lora_config(cfg)
    lcfg.use_dora = True
    return _wrap(model, lcfg, ctx)


def disable_bnb_cpu_inference_repack(model) -> int:
    """bitsandbytes on CPUs with AVX512-BF16: a no-grad forward makes Linear4bit repack its weights
    for inference, after which LoRA above it silently gets no gradient. Turn that path off."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def _qlora(model, cfg, ctx) -> Prepared:
    from peft import prepare_model_for_kbit_training
    warnings.filterwarnings("ignore", message=".*inputs will be cast from.*")  # bnb int8 on CPU
    model = prepare_model_for_kbit_training(
        model, use_gradient_checkpointing=ctx.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False})
    prepared = _wrap(model, _lora_config(cfg), ctx, notes={"base_quantization": f"{cfg.quantization.bits}bit"})
    disable_bnb_cpu_inference_repack(prepared.model)
    return prepared


register("qlora4")(_qlora)
register("qlora8")(_qlora)


@register("prompt_tuning")
def prompt_tuning(model, cfg, ctx) -> Prepared:
    from peft import PromptTuningConfig, PromptTuningInit
    pt = cfg.prompt_tuning
    kwargs = dict(task_type="CAUSAL_LM", num_virtual_tokens=pt.num_virtual_tokens)
    if pt.init == "text":
        kwargs.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=pt.init_text,
                      tokenizer_name_or_path=ctx.model_ref)
    return _wrap(model, PromptTuningConfig(**kwargs), ctx)
