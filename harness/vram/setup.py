"""What a resolved run config means for memory: the training setup and the dtypes tensors end up in.

The dtype rules follow what this harness does (harness/models.py, harness/methods, harness/train.py):
- CUDA, precision auto/bf16: weights loaded in bf16, forward under bf16 autocast;
- CPU (or precision fp32): everything fp32, no autocast;
- peft keeps LoRA/DoRA/prompt weights fp32 (autocast_adapter_dtype); bottleneck adapters are
  created fp32, BitFit's new biases in the weights' dtype; gradients and AdamW states take the
  dtype of their parameter;
- quantised bases (bitsandbytes): prepare_model_for_kbit_training casts every non-quantised
  parameter (embeddings, norms, output head) to fp32, so the residual stream is fp32 and the
  bnb layers return fp32 (they cast back to their input's dtype). Only the qlora methods call it;
  another method with method.quantization.bits set keeps its non-quantised parameters in bf16.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from harness.errors import ConfigError
from harness.vram import constants as C

TRAINING_METHODS = ("full", "lora", "dora", "qlora4", "qlora8", "adapter_series", "adapter_parallel",
                    "prompt_tuning", "bitfit")
OPTIMIZERS = ("adamw", "adamw8bit", "paged_adamw8bit")


@dataclass(frozen=True)
class Setup:
    method: str
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
        return self.method != "none"

    @property
    def lora(self) -> bool:
        return self.method in ("lora", "dora", "qlora4", "qlora8")

    @property
    def seq_len(self) -> int:
        """Tokens per sequence in the forward: prompt tuning prepends its virtual tokens."""
        return self.cutoff_len + (self.virtual_tokens if self.method == "prompt_tuning" else 0)

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
    if s.quant_bits and s.method in ("qlora4", "qlora8"):
        return Dtypes(base_weight=4, residual=4, proj_out=4, attn=2, lora_in=2,
                      dropout_mask=C.DROPOUT_MASK_BYTES_CUDA, logits=2)
    return Dtypes(base_weight=2, residual=2, proj_out=2, attn=2, lora_in=2,
                  dropout_mask=C.DROPOUT_MASK_BYTES_CUDA, logits=2)


def _device(name: str) -> str:
    name = str(name or "auto")
    if name == "cpu":
        return "cpu"
    if name == "auto" or name.startswith("cuda"):
        return "cuda"  # the estimate is for a GPU unless the run is pinned to the CPU
    raise ConfigError(f"device must be auto, cpu or cuda[:N], not '{name}'")


def _fused_loss(setting: str, device: str) -> str:
    if setting in ("torch", "liger"):
        return setting if device == "cuda" else "torch"
    if setting == "auto":
        return "liger" if device == "cuda" and importlib.util.find_spec("liger_kernel") else "torch"
    raise ConfigError(f"train.fused_loss must be auto, liger or torch, not '{setting}'")


def setup_from_config(cfg: dict, optim: str = "adamw") -> Setup:
    """Read the parts of a resolved run config (record run_info.config) that change memory."""
    try:
        method, train = cfg["method"], cfg.get("train") or {}
        name = method["name"]
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"run config lacks method.name: {exc}") from exc
    if name not in TRAINING_METHODS + ("none",):
        raise ConfigError(f"unknown method '{name}' for the VRAM estimate; one of {', '.join(TRAINING_METHODS)}, none")
    if optim not in OPTIMIZERS:
        raise ConfigError(f"--optim must be one of {', '.join(OPTIMIZERS)}, not '{optim}'")
    device = _device(cfg.get("device", "auto"))
    precision = str(train.get("precision", "auto"))
    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"train.precision must be auto, bf16 or fp32, not '{precision}'")
    if precision == "auto":
        precision = "bf16" if device == "cuda" else "fp32"
    quant = method.get("quantization") or {}
    bits = int(quant.get("bits", 0) or 0)
    if bits not in (0, 4, 8):
        raise ConfigError(f"method.quantization.bits must be 0, 4 or 8, not {bits}")
    lora, adapter = method.get("lora") or {}, method.get("adapter") or {}
    micro, batch = int(train.get("micro_batch_size", 4)), int(train.get("batch_size", 16))
    cutoff = int(train.get("cutoff_len", 256))
    if micro <= 0 or batch <= 0 or cutoff <= 0:
        raise ConfigError(f"train.batch_size ({batch}), train.micro_batch_size ({micro}) and train.cutoff_len "
                          f"({cutoff}) must be positive")
    if name in ("lora", "dora", "qlora4", "qlora8") and int(lora.get("r", 0)) <= 0:
        raise ConfigError(f"method.lora.r must be positive, not {lora.get('r')}")
    ev, task = cfg.get("eval") or {}, cfg.get("task") or {}
    return Setup(
        method=name, device=device, precision=precision, quant_bits=bits,
        double_quant=bool(quant.get("double_quant", True)), lora_r=int(lora.get("r", 32)),
        lora_targets=tuple(lora.get("target_modules") or ()), lora_dropout=float(lora.get("dropout", 0.0)),
        dora=name == "dora" or bool(lora.get("use_dora", False)),
        adapter_size=int(adapter.get("bottleneck_size", 256)),
        adapter_kind={"adapter_series": "series", "adapter_parallel": "parallel"}.get(name, ""),
        bitfit_targets=tuple(method.get("bitfit_targets") or ()),
        virtual_tokens=int((method.get("prompt_tuning") or {}).get("num_virtual_tokens", 0)),
        micro_batch=min(micro, batch), micro_batch_size=micro, batch_size=batch, cutoff_len=cutoff,
        gradient_checkpointing=bool(train.get("gradient_checkpointing", False)),
        fused_loss=_fused_loss(str(train.get("fused_loss", "auto")), device), optim=optim,
        eval_batch=int(ev.get("batch_size", 16)),
        eval_new_tokens=int(ev.get("max_new_tokens") or task.get("max_new_tokens") or 256))
