"""Bytes of weights, trainable parameters, gradients and optimizer states. Pure arithmetic on a
ModelShape and a Setup; every function returns bytes."""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.vram import constants as C
from harness.vram.architecture import Linear, ModelShape
from harness.vram.inputs import Dtypes, Setup


@dataclass(frozen=True)
class Trainable:
    """One group of trainable tensors of the same size."""
    what: str
    numel: int  # elements per tensor
    count: int  # tensors
    nbytes: int  # bytes per element of the parameter (and of its gradient and torch AdamW states)
    in_weights: bool = False  # already counted under weights (full fine-tuning, existing biases)

    @property
    def total(self) -> int:
        return self.numel * self.count


def nf4_bytes(lin: Linear, double_quant: bool) -> tuple[float, float]:
    """(packed 4-bit values, quantisation constants) of one Linear4bit weight."""
    blocks = math.ceil(lin.numel / C.NF4_BLOCKSIZE)
    if double_quant:
        consts = (blocks * C.NF4_DQ_ABSMAX_BYTES + math.ceil(blocks / C.NF4_DQ_BLOCKSIZE) * C.NF4_DQ_SECOND_ABSMAX_BYTES
                  + C.NF4_DQ_PER_LAYER_BYTES)
    else:
        consts = blocks * C.NF4_ABSMAX_BYTES
    return math.ceil(lin.numel * C.NF4_BYTES_PER_PARAM), consts


def int8_bytes(lin: Linear) -> tuple[float, float]:
    """(int8 values, row-wise fp32 scales) of one Linear8bitLt weight."""
    return lin.numel * C.INT8_BYTES_PER_PARAM, lin.out_features * C.INT8_ROW_SCALE_BYTES


def weight_bytes(shape: ModelShape, s: Setup, dt: Dtypes) -> dict[str, float]:
    """The base model's weights by storage kind. bitsandbytes quantises every nn.Linear except the
    output head; embeddings, norms, biases and the head stay unquantised."""
    if not s.quant_bits:
        label = "bf16" if dt.base_weight == 2 else "fp32"
        return {f"{label} weights ({shape.total_params / 1e9:.3g}B params)": shape.total_params * dt.base_weight}
    values = consts = 0.0
    for lin in shape.linears:
        v, c = nf4_bytes(lin, s.double_quant) if s.quant_bits == 4 else int8_bytes(lin)
        values, consts = values + v, consts + c
    kind = "NF4 4-bit" if s.quant_bits == 4 else "LLM.int8 8-bit"
    const_kind = ("absmax, double-quantised" if s.double_quant else "fp32 absmax / 64") if s.quant_bits == 4 \
        else "fp32 row scales"
    rest = shape.total_params - shape.quantisable_params
    rest_label = "fp32" if dt.base_weight == 4 else "bf16"
    return {f"{kind} linear weights ({shape.quantisable_params / 1e9:.3g}B params)": values,
            f"quantisation constants ({const_kind})": consts,
            f"{rest_label} embeddings, norms, head, biases ({rest / 1e6:.4g}M params)": rest * dt.base_weight}


def lora_matches(shape: ModelShape, targets) -> list[Linear]:
    """peft's rule for a list of names: a module matches when its name is, or ends with '.', a target."""
    targets = tuple(targets)
    return [lin for lin in (*shape.linears, shape.lm_head)
            if any(lin.name == t or lin.name.endswith("." + t) for t in targets)]


def adapter_widths(shape: ModelShape, s: Setup) -> list[tuple[str, int, int, int]]:
    """(where, adapter input width, output width, how many) of the bottleneck adapters, placed as
    harness/methods/bottleneck.py places them: one per MLP block, or one per targeted linear layer
    (parallel beside it; series before gate/up_proj, after down_proj)."""
    from harness.methods.bottleneck import side_and_widths
    if "mlp" in s.adapter_targets:
        return [("mlp", shape.hidden, shape.hidden, shape.mlp_modules)]
    out = []
    for target in s.adapter_targets:
        found = [lin for lin in shape.linears if lin.short == target]
        if found:
            _, width_in, width_out = side_and_widths(s.adapter_kind, target, found[0].in_features,
                                                     found[0].out_features)
            out.append((target, width_in, width_out, len(found)))
    return out


def trainables(shape: ModelShape, s: Setup, dt: Dtypes) -> list[Trainable]:
    if s.kind == "none":
        return []
    if s.kind == "full":
        return [Trainable(name, n, 1, dt.base_weight, in_weights=True) for name, n in shape.param_numels]
    out: list[Trainable] = []
    if s.lora:
        for lin in lora_matches(shape, s.lora_targets):
            out.append(Trainable(f"lora_A {lin.short}", s.lora_r * lin.in_features, 1, 4))
            out.append(Trainable(f"lora_B {lin.short}", lin.out_features * s.lora_r, 1, 4))
            if s.dora:
                out.append(Trainable(f"dora magnitude {lin.short}", lin.out_features, 1, 4))
    elif s.adapter_kind:
        for where, width_in, width_out, count in adapter_widths(shape, s):
            out.append(Trainable(f"adapter down {where}", width_in * s.adapter_size, count, 4))
            out.append(Trainable(f"adapter up {where}", s.adapter_size * width_out, count, 4))
    elif s.kind == "bitfit":
        targets = set(s.bitfit_targets)
        for lin in shape.linears:  # new zero biases take the weight's dtype (harness/methods/bitfit.py)
            if lin.short in targets and not lin.has_bias:
                out.append(Trainable(f"bias {lin.short}", lin.out_features, 1, dt.base_weight))
        for name, n in shape.param_numels:  # the model's own biases train too, in their dtype
            if name.endswith(".bias"):
                out.append(Trainable(name, n, 1, dt.base_weight, in_weights=True))
    elif s.kind == "prompt":
        out.append(Trainable("soft prompt", s.virtual_tokens * shape.hidden, 1, 4))
    return out


def trainable_param_bytes(ts: list[Trainable]) -> float:
    """Parameters the method adds (not part of the base weights)."""
    return sum(t.total * t.nbytes for t in ts if not t.in_weights)


def gradient_bytes(ts: list[Trainable]) -> float:
    return sum(t.total * t.nbytes for t in ts)


def optimizer_bytes(ts: list[Trainable], optim: str) -> float:
    """torch AdamW: two states in the parameter's dtype. bitsandbytes 8-bit (paged) AdamW: two uint8
    states with blockwise fp32 absmax, fp32 states for small tensors; paged states live in unified
    memory and can be evicted to the host under pressure, but occupy the GPU while they fit."""
    if optim == "adamw":
        return sum(C.ADAM_STATES * t.total * t.nbytes for t in ts)
    total = 0.0
    for t in ts:
        if t.numel >= C.BNB_OPTIM_MIN_8BIT_SIZE:
            per = t.numel + math.ceil(t.numel / C.BNB_OPTIM_BLOCKSIZE) * 4
        else:
            per = t.numel * 4
        total += C.ADAM_STATES * per * t.count
    return total


def autocast_copy_bytes(ts: list[Trainable], s: Setup, shape: ModelShape | None = None) -> float:
    """Under autocast every fp32 weight that requires grad and enters a matmul gets a cached bf16
    copy that lives until backward (LoRA A/B, adapters; not DoRA magnitudes or the
    soft prompt, which enter elementwise ops / a concatenation). Full fine-tuning keeps fp32 master
    weights (harness.pipeline.models.storage_dtype): every Linear weight, the output head included, gets one."""
    if not s.autocast:
        return 0.0
    if s.kind == "full" and shape is not None:
        head = () if shape.tied_embeddings else (shape.lm_head,)
        return 2.0 * sum(lin.in_features * lin.out_features for lin in (*shape.linears, *head))
    return sum(t.total * 2 for t in ts if t.nbytes == 4 and not t.in_weights
               and not t.what.startswith(("dora magnitude", "soft prompt")))


def dora_weight_copy_bytes(shape: ModelShape, s: Setup) -> tuple[float, float]:
    """(all layers, one layer) of bf16 base-weight copies DoRA keeps for backward.

    With lora_dropout > 0, peft's DoRA recomputes the base output from the dropped-out fp32 input:
    F.linear(x, weight.to(fp32)) under autocast casts the whole base weight to bf16, and backward
    needs that copy wherever the input needs a gradient (not for layer 0's q/k/v, fed by frozen
    embeddings, unless checkpointing makes the input require grad)."""
    if not (s.dora and s.lora_dropout > 0 and s.autocast):
        return 0.0, 0.0
    matched = lora_matches(shape, s.lora_targets)
    one_layer = sum(2.0 * lin.numel for lin in matched if ".layers.0." in f".{lin.name}.")
    skipped = 0.0 if s.gradient_checkpointing else sum(
        2.0 * lin.numel for lin in matched if lin.name.endswith(("layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj",
                                                                  "layers.0.self_attn.v_proj")))
    return sum(2.0 * lin.numel for lin in matched) - skipped, one_layer
