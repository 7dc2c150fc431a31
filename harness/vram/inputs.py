"""What a resolved run config means for memory: the training setup and the dtypes tensors end up in.

The dtype rules follow what this harness does (harness/pipeline/models.py, harness/methods, harness/pipeline/train.py):
- CUDA, precision auto/bf16: weights loaded in bf16, forward under bf16 autocast;
- CPU (or precision fp32): everything fp32, no autocast;
- peft keeps LoRA/DoRA/prompt weights fp32 (autocast_adapter_dtype); bottleneck adapters are
  created fp32, BitFit's new biases in the weights' dtype; gradients and AdamW states take the
  dtype of their parameter;
- quantised bases (bitsandbytes): prepare_model_for_kbit_training (harness.methods.apply, for
  every method on a 4/8-bit base) casts every non-quantised parameter (embeddings, norms, output
  head) to fp32, so the residual stream is fp32 and the bnb layers return fp32 (they cast back to
  their input's dtype).

What each method's memory consists of is modelled per kind (full, lora, adapter, bitfit, prompt,
none), derived from the method registry; a method of another kind gets no estimate and a reason.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from harness import methods
from harness.errors import ConfigError
from harness.vram import constants as C

OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")


# What the estimator models, looked up by method name, then peft config class, then family. Every
# LoraConfig method is LoRA's graph in training (rsLoRA and LoRA+ change a scale or the optimizer's
# per-group lr; PiSSA/OLoRA change the initial values, the residual stays in the base's dtype).
KIND_BY_NAME = {"bitfit": "bitfit"}
KIND_BY_PEFT_CONFIG = {"LoraConfig": "lora", "PromptTuningConfig": "prompt"}
KIND_BY_FAMILY = {"base": "none", "full": "full", "adapter": "adapter"}
# Why the others get no estimate (a wrong number would be worse than none), by peft config class.
NOT_MODELLED = {
    "PrefixTuningConfig": "prefix tuning puts num_virtual_tokens trainable keys/values in every layer's "
                          "attention and cache; the activation formulas have no attention over a prefix",
    "PromptEncoderConfig": "p-tuning's prompt encoder (an MLP run over the virtual tokens of every example) "
                           "is not in the formulas",
    "IA3Config": "(IA)^3 saves the scaled projections' outputs (k, v) and the down-projection's input for its "
                 "vectors' gradients; those terms are not in the formulas",
    "LoHaConfig": "LoHa builds a full-size weight update per target at every forward and keeps its factors' "
                  "products for backward; not in the formulas",
    "LoKrConfig": "LoKr builds a full-size Kronecker weight update per target at every forward; not in the formulas",
    "VeraConfig": "VeRA's shared random projections (sized to the largest target) and its per-layer rank-r "
                  "intermediates are not in the formulas",
    "OFTConfig": "OFT saves a rotated copy of every target's input and its block-diagonal rotations; not in "
                 "the formulas",
    "BOFTConfig": "BOFT keeps a dense in_features x in_features permutation buffer per target (LLaMA-7B "
                  "down_proj: 11008^2 fp32 = 485 MB each) and rotated inputs; not in the formulas",
    "AdaLoraConfig": "AdaLoRA's SVD triplets, its rank allocator's importance states (three more copies of every "
                     "adapter weight) and the orthogonality penalty's Gram matrices are not in the formulas",
    "LNTuningConfig": "LN tuning trains copies of the norms, whose normalised outputs are then saved for the "
                      "weight gradient; not in the formulas",
}


def modelled_kind(spec: methods.Method) -> str | None:
    """Which memory model applies to a registered method (None: not modelled)."""
    return (KIND_BY_NAME.get(spec.name) or KIND_BY_PEFT_CONFIG.get(spec.peft_config)
            or KIND_BY_FAMILY.get(spec.family))


def modelled_methods() -> list[str]:
    return [n for n, spec in methods.all_methods().items() if modelled_kind(spec) is not None]


@dataclass(frozen=True)
class Setup:
    method: str
    kind: str  # full | lora | adapter | bitfit | prompt | none (modelled_kind)
    device: str  # cuda | cpu
    precision: str  # bf16 | fp32
    quant_bits: int  # 0, 4 or 8
    double_quant: bool
    lora_r: int
    lora_targets: tuple[str, ...]
    lora_dropout: float
    dora: bool
    adapter_size: int
    adapter_kind: str  # series | parallel | ""
    adapter_targets: tuple[str, ...]  # method.adapter.target_modules: mlp, or linear layer names
    bitfit_targets: tuple[str, ...]
    virtual_tokens: int
    micro_batch: int  # examples per forward: min(train.micro_batch_size, train.batch_size)
    micro_batch_size: int  # train.micro_batch_size as configured
    batch_size: int  # examples per optimizer step
    cutoff_len: int
    gradient_checkpointing: bool
    fused_loss: str  # liger | torch
    optim: str
    eval_batch: int
    eval_new_tokens: int

    @property
    def trains(self) -> bool:
        return self.kind != "none"

    @property
    def lora(self) -> bool:
        return self.kind == "lora"

    @property
    def seq_len(self) -> int:
        """Tokens per sequence in the forward: prompt tuning prepends its virtual tokens."""
        return self.cutoff_len + (self.virtual_tokens if self.kind == "prompt" else 0)

    @property
    def accumulation(self) -> int:
        return max(1, self.batch_size // self.micro_batch)

    @property
    def padded(self) -> bool:
        """Batches of several examples of different lengths carry a padding mask: HF then builds a 4D
        mask, SDPA uses the memory-efficient kernel and grouped K/V heads are repeated."""
        return self.micro_batch > 1

    @property
    def autocast(self) -> bool:
        return self.device == "cuda" and self.precision == "bf16"


@dataclass(frozen=True)
class Dtypes:
    """Bytes per element of each kind of tensor."""
    base_weight: int  # non-quantised base parameters
    residual: int  # residual stream and norm outputs
    proj_out: int  # outputs of base projections (q/k/v, gate/up, the MLP product)
    attn: int  # q/k/v/output as the attention kernel sees them
    lora_in: int  # the copy of a projection input that LoRA/adapter matmuls save (autocast: bf16)
    dropout_mask: int
    logits: int


def dtypes(s: Setup) -> Dtypes:
    if not s.autocast:  # fp32 throughout
        return Dtypes(4, 4, 4, 4, 4, C.DROPOUT_MASK_BYTES_CUDA if s.device == "cuda" else 4, 4)
    if s.kind == "full":  # fp32 master weights (harness.pipeline.models.storage_dtype), bf16 activations
        return Dtypes(base_weight=4, residual=2, proj_out=2, attn=2, lora_in=2,
                      dropout_mask=C.DROPOUT_MASK_BYTES_CUDA, logits=2)
    if s.quant_bits and s.trains:  # k-bit preparation: non-quantised parameters in fp32
        return Dtypes(base_weight=4, residual=4, proj_out=4, attn=2, lora_in=2,
                      dropout_mask=C.DROPOUT_MASK_BYTES_CUDA, logits=2)
    return Dtypes(base_weight=2, residual=2, proj_out=2, attn=2, lora_in=2,
                  dropout_mask=C.DROPOUT_MASK_BYTES_CUDA, logits=2)


def _device(name: str) -> str:
    """The estimate is for a GPU unless the run is pinned to the CPU."""
    return "cpu" if str(name or "auto") == "cpu" else "cuda"


def _fused_loss(setting: str, device: str) -> str:
    if setting in ("torch", "liger"):
        return setting if device == "cuda" else "torch"
    return "liger" if device == "cuda" and importlib.util.find_spec("liger_kernel") else "torch"


def setup_from_config(cfg: dict, optim: str = "adamw") -> Setup:
    """Read the parts of a resolved run config (as checked by harness.config.checks, or a record's
    run_info.config) that change memory."""
    try:
        method, train = cfg["method"], cfg.get("train") or {}
        spec = methods.get(method["name"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"run config lacks method.name: {exc}") from exc
    kind = modelled_kind(spec)
    if kind is None:
        why = NOT_MODELLED.get(spec.peft_config, f"no memory model for {methods.FAMILIES[spec.family]} methods")
        raise ConfigError(f"method {spec.name} is not modelled by the VRAM estimator: {why}. No estimate rather "
                          f"than a wrong one; modelled: {', '.join(modelled_methods())}")
    if optim not in OPTIMIZERS:
        raise ConfigError(f"--optim must be one of {', '.join(OPTIMIZERS)}, not '{optim}'")
    device = _device(cfg.get("device", "auto"))
    precision = str(train.get("precision", "auto"))
    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    quant = method.get("quantization") or {}
    peft, adapter = method.get("peft") or {}, method.get("adapter") or {}
    micro, batch = int(train.get("micro_batch_size", 4)), int(train.get("batch_size", 16))
    ev, task = cfg.get("eval") or {}, cfg.get("task") or {}
    return Setup(
        method=spec.name, kind=kind, device=device, precision=precision, quant_bits=int(quant.get("bits", 0) or 0),
        double_quant=bool(quant.get("double_quant", True)), lora_r=int(peft.get("r", 8)),
        lora_targets=tuple(peft.get("target_modules") or ()), lora_dropout=float(peft.get("lora_dropout", 0.0)),
        dora=kind == "lora" and bool(peft.get("use_dora", False)),
        adapter_size=int(adapter.get("bottleneck_size", 256)),
        adapter_kind={"adapter_series": "series", "adapter_parallel": "parallel"}.get(spec.name, ""),
        adapter_targets=tuple(adapter.get("target_modules") or ("mlp",)),
        bitfit_targets=tuple(method.get("bitfit_targets") or ()),
        virtual_tokens=int(peft.get("num_virtual_tokens", 0)) if kind == "prompt" else 0,
        micro_batch=min(micro, batch), micro_batch_size=micro, batch_size=batch,
        cutoff_len=int(train.get("cutoff_len", 256)),
        gradient_checkpointing=bool(train.get("gradient_checkpointing", False)),
        fused_loss=_fused_loss(str(train.get("fused_loss", "auto")), device), optim=optim,
        eval_batch=int(ev.get("batch_size", 16)),
        eval_new_tokens=int(ev.get("max_new_tokens") or task.get("max_new_tokens") or 256))
