"""Fine-tuning methods: one registry entry per method, each owning its whole recipe.

A `Method` declares what the rest of the harness needs to know about it, so the runner, the
benchmark, the VRAM estimator and the report derive their behaviour and method lists from here,
never from hand-kept lists: whether it trains, which parts of the method config it reads, the
peft config class whose fields `method.peft` must match, whether the base may or must be loaded
in 4/8 bits, whether base weights train, whether it folds into the base for evaluation, and how
its saved weights are loaded back. conf/method/<name>.yaml holds its hyper-parameters; every
module in this package is imported on first lookup, so a new method is one file (or one entry)
plus one YAML.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Callable

import torch

from harness.errors import ConfigError
from harness.registry import import_package_modules

# bitsandbytes (imported by peft) warns at import on AVX512-BF16 CPUs that it cannot fetch an
# optional CPU kernel from the Hugging Face Hub; its own fallback is used. Not the user's problem.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

# Report grouping, in display order.
FAMILIES = {
    "base": "base model (no fine-tuning)",
    "full": "full fine-tuning",
    "lora": "LoRA variants",
    "adapter": "bottleneck adapters",
    "prompt": "prompt-based",
    "multiplicative": "multiplicative / orthogonal",
    "selective": "selective (a subset of the base's own parameters)",
}
# The same families as table cells and legend entries.
FAMILY_LABELS = {"base": "base", "full": "full", "lora": "LoRA variants", "adapter": "adapters",
                 "prompt": "prompt-based", "multiplicative": "multiplicative / orthogonal", "selective": "selective"}
QUANTIZATION = ("none", "optional", "required")

# peft config fields the harness fills in itself (or that describe a saved adapter, not a recipe)
HARNESS_SETS = {"task_type", "peft_type", "base_model_name_or_path", "revision", "inference_mode", "auto_mapping",
                "peft_version", "runtime_config", "tokenizer_name_or_path"}


def peft_arguments(class_name: str) -> set[str]:
    """The keyword arguments a recipe may give peft's config class `class_name`."""
    import peft
    return {f.name for f in fields(getattr(peft, class_name)) if f.init} - HARNESS_SETS


@dataclass
class MethodContext:
    tokenizer: object
    model_ref: str  # what from_pretrained was given (for tokenizer-based initialisations)
    device: torch.device
    gradient_checkpointing: bool = False
    total_steps: int = 0  # optimizer steps of the run (schedules such as AdaLoRA's rank budget)


@dataclass
class Prepared:
    model: torch.nn.Module
    save: Callable[[str], None]
    notes: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    name: str
    build: Callable  # (base model, MethodConfig, MethodContext) -> Prepared
    family: str
    load: Callable | None = None  # (base model, checkpoint dir) -> model with the trained weights
    trains: bool = True
    sections: tuple = ()  # method config sections it reads besides name and lr
    peft_config: str | None = None  # peft class name whose fields method.peft must match
    quantization: str = "none"  # none | optional | required: a 4/8-bit base
    frozen_base: bool = True  # False when base weights train (full fine-tuning)
    merges_for_eval: bool = False  # folded into an unquantised base for evaluation (LoRA-like)
    quantization_bits: tuple = (4, 8)  # the bit widths a quantised base may use
    # (model, lr, weight_decay, MethodConfig) -> torch optimizer; None: AdamW over the trainable parameters
    optimizer: Callable | None = None
    after_step: Callable | None = None  # (model, global step) after every optimizer step
    # other names of this method in published results (LLM-Adapters' "prefix" is prefix_tuning)
    aliases: tuple = ()

    def __post_init__(self):
        if self.family not in FAMILIES or self.quantization not in QUANTIZATION:
            raise ValueError(f"method {self.name}: bad family {self.family!r} or quantization {self.quantization!r}")

    @property
    def flops_per_param_token(self) -> int:
        """≈6N per token when base weights get gradients (forward, input and weight gradients);
        ≈4N when the base is frozen (forward and input gradients; adapter weight gradients are small)."""
        return 4 if self.frozen_base else 6


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name} registered twice")
    METHODS[method.name] = method
    return method


def all_methods() -> dict[str, Method]:
    """Every registered method, in registration order within family display order."""
    import_package_modules(__name__)
    order = list(FAMILIES)
    return dict(sorted(METHODS.items(), key=lambda kv: order.index(kv[1].family)))


def get(name: str) -> Method:
    methods = all_methods()
    if name not in methods:
        from harness.suggest import did_you_mean
        raise ConfigError(f"unknown method '{name}'{did_you_mean(name, methods)}; choose method= one of "
                          f"{', '.join(methods)}")
    return methods[name]


def canonical(name: str) -> str:
    """The registered name of a method named `name` here or in published results (its alias)."""
    for registered, spec in all_methods().items():
        if name == registered or name in spec.aliases:
            return registered
    return name


def family_label(name: str) -> str | None:
    """The short family label of a method (or of its alias); None for a method this checkout lacks."""
    spec = all_methods().get(canonical(name))
    return FAMILY_LABELS[spec.family] if spec else None


def apply(model, cfg, ctx: MethodContext) -> Prepared:
    """Apply method `cfg.name` to a loaded base: gradient checkpointing switched on the way the
    method needs it (k-bit preparation for a quantised base), then the method's own build."""
    spec = get(cfg.name)
    quantized = bool(getattr(model, "is_quantized", False))
    if quantized and spec.trains:
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=ctx.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif ctx.gradient_checkpointing and spec.trains:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if spec.frozen_base:  # checkpointed blocks need an input that requires grad to backpropagate
            model.enable_input_require_grads()
    prepared = spec.build(model, cfg, ctx)
    if quantized:
        disable_bnb_cpu_inference_repack(prepared.model)
        prepared.notes.setdefault("base_quantization", f"{cfg.quantization.bits}bit")
    return prepared


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
