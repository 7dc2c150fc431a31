"""Activation memory of a LLaMA-style decoder, in bytes per token, from the architecture.

Counted are the tensors autograd saves for backward (what stays alive between forward and
backward), derived op by op from the transformers / peft / bitsandbytes code this harness runs:
- RMSNorm saves its fp32 input copy (4h) and the per-token rsqrt; with a trainable weight also the
  normalised tensor (Gemma: in fp32);
- a frozen Linear saves nothing for its input gradient but its weight; a trainable one (full
  fine-tuning) saves its input, shared by q/k/v and by gate/up; bitsandbytes int8 saves its input
  even when frozen; 4-bit saves only the packed weight;
- SDPA (memory-efficient / flash kernel) saves q, k, v, the output (which is also o_proj's input)
  and the fp32 log-sum-exp; with padding, grouped K/V heads are repeated into copies and the
  boolean mask becomes a per-layer additive mask in the query dtype;
- SiLU/GELU(gate) * up saves gate, act(gate) and up;
- LoRA saves, per target, its bf16 input copy, the dropout mask and the rank-r intermediate;
  DoRA also the base output and the LoRA output; bottleneck adapters their bf16 input and the
  bottleneck activation;
- with use_cache (the HF default when not checkpointing) the forward also fills a KV cache.
The functions are pure; tests/test_vram.py::test_activation_formula_matches_autograd compares them
with the tensors autograd saves on tiny LLaMA and Gemma 3 models.
"""
from __future__ import annotations

from harness.vram import constants as C
from harness.vram.architecture import ModelShape
from harness.vram.inputs import Dtypes, Setup
from harness.vram.params import adapter_widths, lora_matches


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def kv_repeated(shape: ModelShape, s: Setup) -> bool:
    """transformers repeats grouped K/V heads for SDPA when a padding mask is present; with a single
    K/V head the repeat is a view (no copy)."""
    return s.padded and shape.kv_heads > 1 and shape.heads != shape.kv_heads


def _norm_bytes(dim: int, s: Setup, shape: ModelShape, dt: Dtypes) -> float:
    """One RMSNorm over `dim` features: fp32 input + rsqrt, plus the normalised tensor when the weight trains."""
    trains = s.kind == "full"
    normalised = (4 if shape.norm_style == "gemma" else dt.residual) if trains else 0
    return (4 + normalised) * dim + 4


def layer_bytes_per_token(shape: ModelShape, s: Setup, dt: Dtypes) -> dict[str, float]:
    """Saved activations of one decoder layer per token, by part (KV cache not included)."""
    h, i, q, kv = shape.hidden, shape.intermediate, shape.q_dim, shape.kv_dim
    parts: dict[str, float] = {}
    parts["norms"] = shape.norms_per_layer * _norm_bytes(h, s, shape, dt)
    if shape.qk_norm:
        parts["q/k norms"] = (_norm_bytes(shape.head_dim, s, shape, dt) - 4) * (shape.heads + shape.kv_heads) \
            + 4 * (shape.heads + shape.kv_heads)
    if s.kind == "full" or s.quant_bits == 8:
        # inputs of q/k/v and of gate/up (norm outputs), and of down (the MLP product); o_proj's input
        # is the attention output, already saved by the attention kernel
        parts["projection inputs"] = 2 * dt.residual * h + dt.proj_out * i
    repeated = kv_repeated(shape, s)
    k_saved = q if repeated else kv
    seq = s.seq_len
    parts["attention"] = (dt.attn * (2 * q + 2 * k_saved)
                          + 4 * shape.heads * _ceil_to(seq, C.ATTN_LSE_PAD) / seq
                          + (dt.attn * _ceil_to(seq, C.ATTN_BIAS_PAD) if s.padded else 0))
    parts["mlp"] = 3 * dt.proj_out * i
    if s.lora:
        per_layer = [lin for lin in lora_matches(shape, s.lora_targets) if ".layers.0." in f".{lin.name}."]
        mask = dt.dropout_mask if s.lora_dropout > 0 else 0
        parts["lora"] = sum((mask + dt.lora_in) * lin.in_features + dt.lora_in * s.lora_r for lin in per_layer)
        if s.dora:
            parts["dora"] = sum((dt.proj_out + dt.lora_in) * lin.out_features for lin in per_layer)
    if s.adapter_kind:  # each adapter keeps its input (bf16) and its bottleneck activation
        parts["adapter"] = sum(dt.lora_in * (width_in + s.adapter_size) * count
                               for _, width_in, _, count in adapter_widths(shape, s)) / shape.layers
    return parts


def kv_cache_bytes_per_token(shape: ModelShape, s: Setup, dt: Dtypes) -> tuple[float, float]:
    """(current micro-batch beyond what attention already saves, one whole cache) per token per layer.
    The cache holds post-RoPE K and V in the projection dtype; when attention saved those very
    tensors (no repetition, no dtype cast) the current cache costs nothing extra."""
    if not s.trains:
        return 0.0, 2 * shape.kv_dim * dt.proj_out
    if s.gradient_checkpointing or not shape.use_cache:
        return 0.0, 0.0  # HF turns the cache off under gradient checkpointing
    whole = 2 * shape.kv_dim * dt.proj_out
    shared = dt.proj_out == dt.attn and not kv_repeated(shape, s)
    return (0.0 if shared else whole), whole


def frozen_prefix_bytes_per_token(shape: ModelShape, s: Setup, dt: Dtypes, layer: dict) -> tuple[float, float]:
    """(activations autograd does not save, KV cache no longer shared) per token in the first layer.

    With frozen embeddings nothing before the first trainable tensor needs a gradient, so nothing
    there is saved: for LoRA/DoRA/BitFit (trainable tensors from layer 0's q/k/v on) that is layer
    0's input norm, the int8 layer's input and the q/k/v dropout masks; for bottleneck adapters all
    of layer 0 before its adapter (a norm on the MLP output comes after it), whose K/V then live only
    in the cache. Full fine-tuning and prompt
    tuning train the input itself; checkpointing keeps only layer inputs anyway."""
    if s.kind in ("full", "prompt", "none") or s.gradient_checkpointing:
        return 0.0, 0.0
    if s.adapter_kind:
        extra_kv = 0.0
        if not s.gradient_checkpointing and shape.use_cache:
            now, whole = kv_cache_bytes_per_token(shape, s, dt)
            extra_kv = whole - now
        after_adapter = _norm_bytes(shape.hidden, s, shape, dt) if shape.post_mlp_norm else 0.0
        # adapters on layer 0's gate/up_proj make part of its MLP carry gradients: the product
        # act(gate) x up keeps act(gate) (up trains), and with gate trained the SiLU keeps its input and
        # the product both factors; adapters on down_proj or the whole MLP start after it
        targets = set(s.adapter_targets) - {"mlp"}
        mlp_saved = (layer["mlp"] if "gate_proj" in targets else
                     dt.proj_out * shape.intermediate if "up_proj" in targets else 0.0)
        return sum(v for k, v in layer.items() if k != "adapter") - after_adapter - mlp_saved, extra_kv
    unsaved = _norm_bytes(shape.hidden, s, shape, dt)
    if s.quant_bits == 8:
        unsaved += dt.residual * shape.hidden
    if s.lora and s.lora_dropout > 0:
        unsaved += dt.dropout_mask * sum(lin.in_features for lin in lora_matches(shape, s.lora_targets)
                                         if lin.name.endswith(("layers.0.self_attn.q_proj", "layers.0.self_attn.k_proj",
                                                               "layers.0.self_attn.v_proj")))
    return unsaved, 0.0


def head_bytes_per_token(shape: ModelShape, s: Setup, dt: Dtypes) -> float:
    """Outside the decoder layers: the final norm, the head's input when the head trains, the int64
    labels cross-entropy keeps, and the shared boolean padding mask (one byte per key position)."""
    total = _norm_bytes(shape.hidden, s, shape, dt) + 8
    if s.kind == "full":  # the head's input, and the token ids the embedding gradient needs
        total += dt.residual * shape.hidden + 8
    if s.padded:
        total += s.seq_len
    return total


def head_copy_bytes(shape: ModelShape, s: Setup) -> float:
    """A fp32 output head (quantised bases after prepare_model_for_kbit_training) is cast to bf16 by
    autocast for the logits matmul; backward needs that copy, so it lives through the step."""
    if s.autocast and s.quant_bits and s.trains:
        return 2.0 * shape.lm_head.numel
    return 0.0


def logits_bytes_per_token(shape: ModelShape, s: Setup, dt: Dtypes) -> dict[str, float]:
    """The logits/loss chain per token at its two candidate peaks and what the output keeps alive.

    forward: previous output's logits (still referenced) + logits + fp32 upcast + fp32 log-softmax;
    backward: logits + saved log-softmax + fp32 gradients of its output and input;
    held: the logits the output object keeps alive during the whole backward.
    With liger's fused linear cross-entropy no logits exist: a chunk of them plus the input gradient."""
    v, h = shape.vocab, shape.hidden
    if s.fused_loss == "liger":
        chunk = C.LIGER_CHUNK_BYTES_PER_TOKEN_PER_HIDDEN * h
        grad_input = dt.residual * h
        return {"forward": chunk + grad_input, "backward": grad_input, "held": 0.0}
    upcast = C.LOSS_FP32_BYTES if dt.logits != C.LOSS_FP32_BYTES else 0
    previous = dt.logits if C.PREVIOUS_OUTPUT_HELD else 0
    return {"forward": (previous + dt.logits + upcast + C.LOSS_FP32_BYTES) * v,
            "backward": (dt.logits + 3 * C.LOSS_FP32_BYTES) * v,
            "held": dt.logits * v}


def forward_transient_bytes(shape: ModelShape, s: Setup, tokens: int) -> float:
    """Largest temporary of one module's forward/backward beyond the saved activations:
    a dequantised weight (4-bit: bf16; int8 backward: an fp32 copy of the int8 matrix), or DoRA's
    weight-norm computation (bf16 identity for the LoRA product, full-size weight copies)."""
    biggest = max(shape.linears, key=lambda lin: lin.numel)
    worst = 0.0
    if s.quant_bits == 4:
        worst = 2.0 * biggest.numel
    elif s.quant_bits == 8:
        worst = 4.0 * biggest.numel + 3.0 * tokens * biggest.in_features  # + fp16 input copy, int8 input
    if s.dora:
        for lin in lora_matches(shape, s.lora_targets):
            worst = max(worst, 2.0 * lin.in_features ** 2 + 18.0 * lin.numel)
    return worst
