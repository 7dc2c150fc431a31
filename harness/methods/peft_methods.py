"""Methods peft implements: each is peft's config class filled from `method.peft` (keyword
arguments named as peft names them), wrapped with get_peft_model, saved and loaded by peft.

The ones that need more than a config class (AdaLoRA's budget schedule, LoRA+'s optimizer,
PiSSA/OLoRA's conversion to a plain LoRA adapter on save) are in harness/methods/lora_variants.py.
"""
from __future__ import annotations

from harness.methods import Method, Prepared, peft_arguments, register


def peft_config(class_name: str, cfg, ctx=None, **fixed):
    """peft's config object for this method config (unknown keys are refused by harness.config.checks
    first); `fixed` are values the harness decides (AdaLoRA's total_step), which win over the YAML's."""
    import peft

    valid = peft_arguments(class_name)  # a key only another method's class takes is not for this run
    kwargs = {"task_type": "CAUSAL_LM", **{k: v for k, v in cfg.peft.items() if k in valid}, **fixed}
    for key, value in list(kwargs.items()):  # OmegaConf lists -> plain lists (peft stores them as given)
        if hasattr(value, "__iter__") and not isinstance(value, (str, dict)):
            kwargs[key] = list(value)
    if str(kwargs.get("prompt_tuning_init", "")).upper() == "TEXT" and ctx is not None:
        kwargs.setdefault("tokenizer_name_or_path", ctx.model_ref)  # the base's own tokenizer
    return getattr(peft, class_name)(**kwargs)


def save_peft(pm):
    return lambda out_dir: pm.save_pretrained(out_dir, safe_serialization=True)


def build_with(class_name: str, notes=None):
    """A build function: get_peft_model with `class_name`'s config; `notes(peft model)` -> dict
    adds what the record should say about how the method ran."""
    def build(model, cfg, ctx) -> Prepared:
        from peft import get_peft_model
        pm = get_peft_model(model, peft_config(class_name, cfg, ctx))
        return Prepared(model=pm, save=save_peft(pm), notes=notes(pm) if notes else {})
    return build


def load_peft(model, checkpoint_dir: str):
    from peft import PeftModel
    return PeftModel.from_pretrained(model, checkpoint_dir)


def peft_method(name: str, class_name: str, family: str, build=None, **kwargs) -> Method:
    """A registry entry for a method peft implements with `class_name`."""
    return register(Method(name=name, build=build or build_with(class_name), load=load_peft, family=family,
                           peft_config=class_name, sections=("peft",) + kwargs.pop("sections", ()), **kwargs))


def _boft_notes(pm) -> dict:
    """peft runs BOFT's butterfly factors only with its CUDA extension; without it (CPU, no ninja) it
    silently uses one factor. Say which ran."""
    from peft.tuners.boft.layer import BOFTLayer
    layers = [m for m in pm.modules() if isinstance(m, BOFTLayer)]
    factors = sorted({int(r.shape[0]) for m in layers for r in m.boft_R.values()})
    return {"boft_butterfly_factor": factors[0] if len(factors) == 1 else factors,
            "boft_cuda_extension": bool(layers and layers[0].fbd_cuda_available)}


# LoRA family: one builder; the YAML says which variant (use_dora, use_rslora, a quantised base, ...).
# method=lora method.quantization.bits=4 is QLoRA done the same way as method=qlora4.
LORA = dict(sections=("quantization",), merges_for_eval=True)
peft_method("lora", "LoraConfig", "lora", quantization="optional", **LORA)
# DoRA on an LLM.int8 base: peft's DoRA initialisation leaves bitsandbytes' 8-bit layer state without its
# scales (bitsandbytes 0.50), so the first training forward fails; a 4-bit base works (tested).
peft_method("dora", "LoraConfig", "lora", quantization="optional", quantization_bits=(4,), **LORA)
peft_method("qlora4", "LoraConfig", "lora", quantization="required", quantization_bits=(4,), **LORA)
peft_method("qlora8", "LoraConfig", "lora", quantization="required", quantization_bits=(8,), **LORA)
peft_method("rslora", "LoraConfig", "lora", quantization="optional", **LORA)
# Methods whose layers work on a 4/8-bit base (bitsandbytes): LoRA's own, and those that only add to
# the base layer's output, rotate or scale its input/output (VeRA, IA3, OFT, BOFT), tune copies of the
# unquantised norms (LN tuning) or feed the frozen model virtual tokens (prompt-based). Each is tested
# against the same method on the dequantised weights (tests/test_method_zoo.py).
QUANTIZABLE = dict(quantization="optional", sections=("quantization",))

# Low-rank relatives with their own peft tuners. peft's LoHa/LoKr layers compute their update from
# the base weight's shape, which a packed 4-bit weight does not have: harness.config.checks refuses a
# quantised base for them.
peft_method("loha", "LoHaConfig", "lora")
peft_method("lokr", "LoKrConfig", "lora")
peft_method("vera", "VeraConfig", "lora", **QUANTIZABLE)

# Prompt-based: the frozen model sees trainable virtual-token embeddings (prompt tuning, p-tuning's
# encoder output) or trainable key/value prefixes in every layer (prefix tuning). LLM-Adapters'
# published "prefix" rows are prefix tuning.
peft_method("prompt_tuning", "PromptTuningConfig", "prompt", **QUANTIZABLE)
peft_method("prefix_tuning", "PrefixTuningConfig", "prompt", aliases=("prefix",), **QUANTIZABLE)
peft_method("p_tuning", "PromptEncoderConfig", "prompt", **QUANTIZABLE)

# Multiplicative / orthogonal: learned vectors or rotations multiply the frozen weights' inputs/outputs.
peft_method("ia3", "IA3Config", "multiplicative", **QUANTIZABLE)
peft_method("oft", "OFTConfig", "multiplicative", **QUANTIZABLE)
peft_method("boft", "BOFTConfig", "multiplicative", build=build_with("BOFTConfig", _boft_notes), **QUANTIZABLE)

# Selective: copies of the base's own normalisation layers train (BitFit is in bitfit.py).
peft_method("ln_tuning", "LNTuningConfig", "selective", **QUANTIZABLE)
