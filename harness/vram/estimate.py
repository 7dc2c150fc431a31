"""Peak GPU memory of one training run: the sum of the parts alive at the moment memory peaks.

Static parts (weights, trainable parameters, gradients, optimizer states, autocast weight copies,
framework buffers) are alive throughout. The dynamic parts are evaluated at the moments where the
peak can fall, and the largest moment is reported with its breakdown, so the parts add up to the
total exactly:
- end of forward: all saved activations, this and the previous micro-batch's KV cache, and the
  loss computation (previous logits + logits + fp32 upcast + log-softmax);
- the last layer's forward: the same minus the loss, plus the largest module temporary;
- start of backward: activations, the current KV cache and the loss gradients over the vocabulary;
- backward through a layer: activations, the held logits and one layer's gradient working set.
Gradients are counted in full at every moment: with gradient accumulation (the default
16 / 4) they persist across micro-batches; with accumulation 1 this is conservative.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import ConfigError
from harness.vram import activations as A
from harness.vram import constants as C
from harness.vram import params as P
from harness.vram.architecture import ModelShape, model_shape
from harness.vram.inputs import Setup, dtypes, setup_from_config

COMPONENTS = ("weights", "trainable_params", "gradients", "optimizer_states", "activations", "kv_cache",
              "logits_and_loss", "transient_workspace", "autocast_weight_copies", "framework_overhead")


@dataclass
class Estimate:
    model: str
    setup: Setup
    shape: ModelShape
    breakdown: dict  # component -> bytes at the peak moment, in COMPONENTS order
    details: dict = field(default_factory=dict)  # component -> {what: bytes}
    peak_moment: str = ""
    assumptions: list = field(default_factory=list)

    @property
    def peak_bytes(self) -> float:
        return sum(self.breakdown.values())

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / C.GIB

    @property
    def total_gib(self) -> float:
        """What nvidia-smi would show: the allocated peak plus allocator slack and the CUDA context."""
        if self.setup.device != "cuda":
            return self.peak_gib
        return self.peak_gib * (1 + C.ALLOCATOR_FRAGMENTATION) + C.CUDA_CONTEXT_GIB


def _assumptions(s: Setup, shape: ModelShape) -> list[str]:
    out = []
    if s.device == "cuda":
        out.append("CUDA, bf16 weights, bf16 autocast (train.precision=auto)" if s.autocast else
                   "CUDA, fp32 weights and activations (train.precision=fp32)")
    else:
        out.append("CPU: everything fp32 (the harness measures RSS there, not comparable to a GPU)")
    out.append(f"batch per forward = micro_batch_size={s.micro_batch} (effective batch {s.batch_size} via "
               f"{s.accumulation} accumulation step{'s' if s.accumulation > 1 else ''}); activations scale "
               f"with the batch per forward")
    seq = f"sequence = train.cutoff_len={s.cutoff_len} tokens for every example"
    if s.kind == "prompt":
        seq += f" + {s.virtual_tokens} virtual tokens"
    out.append(seq + " (the longest batch sets the peak; shorter data peaks lower)")
    if s.quant_bits == 4:
        out.append(f"bitsandbytes NF4 on every Linear but lm_head (blocksize {C.NF4_BLOCKSIZE}, double quant "
                   f"{'on' if s.double_quant else 'off'}); prepare_model_for_kbit_training makes the rest fp32")
    elif s.quant_bits == 8:
        out.append("bitsandbytes LLM.int8 on every Linear but lm_head (int8 + fp32 row scale); "
                   "prepare_model_for_kbit_training makes the rest fp32")
    if s.kind == "full":
        out.append("full fine-tuning: bf16 weights, bf16 gradients, torch AdamW states in bf16 "
                   "(2+2+2+2 = 8 bytes/param, no fp32 master copy)" if s.autocast else
                   "full fine-tuning: fp32 weights, gradients and AdamW states (16 bytes/param)")
    elif s.kind == "bitfit":
        out.append("frozen base; biases train in the weights' dtype (new zero biases too), with gradients "
                   "and AdamW states in that dtype")
    elif s.trains:
        out.append("frozen base; trainable parameters fp32 with fp32 gradients and optimizer states")
    if s.trains:
        out.append({"adamw": "optimizer: torch AdamW (2 states per trainable parameter, parameter dtype)",
                    "adamw8bit": "optimizer: bitsandbytes 8-bit AdamW (2 bytes/param + block absmax)",
                    "paged_adamw8bit": "optimizer: bitsandbytes paged 8-bit AdamW (counted on the GPU; "
                                       "can spill to host memory)"}[s.optim])
        out.append("gradient checkpointing: " + ("on (layer inputs kept, one layer recomputed)"
                                                 if s.gradient_checkpointing else "off (all layer activations kept)"))
        out.append("loss: " + ("liger fused linear cross-entropy (no full logits)" if s.fused_loss == "liger" else
                               "logits materialised, fp32 upcast for cross-entropy"))
        repeated = ", grouped K/V heads repeated" if A.kv_repeated(shape, s) else ""
        out.append("attention: " + (f"padded batches: memory-efficient SDPA with a per-layer mask{repeated}"
                                    if s.padded else "no padding (1 example per forward): flash SDPA"))
        if shape.use_cache and not s.gradient_checkpointing:
            out.append("use_cache is on while training: the KV cache of this and the previous micro-batch "
                       "output stays allocated")
    out.append("peak allocated = torch.cuda.max_memory_allocated (records: memory.train.peak_allocated_gib); "
               f"nvidia-smi adds ~{C.CUDA_CONTEXT_GIB} GiB CUDA context and ~{C.ALLOCATOR_FRAGMENTATION:.0%} "
               f"allocator fragmentation")
    return out


def _eval_estimate(name: str, s: Setup, shape: ModelShape) -> Estimate:
    """method=none: the base model is only evaluated. Weights plus the generation KV cache."""
    dt = dtypes(s)
    weights = P.weight_bytes(shape, s, dt)
    tokens = s.eval_batch * (s.cutoff_len + s.eval_new_tokens)
    kv = tokens * shape.layers * A.kv_cache_bytes_per_token(shape, s, dt)[1]
    parts = dict.fromkeys(COMPONENTS, 0.0)
    parts.update(weights=sum(weights.values()), kv_cache=kv, framework_overhead=C.TORCH_ALLOCATED_OVERHEAD_GIB * C.GIB)
    assumptions = _assumptions(s, shape) + [
        f"method=none: no training; weights + KV cache for generation (eval.batch_size={s.eval_batch} x "
        f"{s.cutoff_len} prompt + {s.eval_new_tokens} new tokens); prompt-forward temporaries not modelled"]
    return Estimate(name, s, shape, parts, {"weights": weights}, "generation", assumptions)


def _saved_activations(shape, s, dt, tokens: int, layer: dict) -> tuple[float, dict, float]:
    """Bytes the forward saves for backward (total and by part), and the K/V a frozen prefix does
    not share (0 with gradient checkpointing)."""
    per_layer = sum(layer.values())
    head = A.head_bytes_per_token(shape, s, dt)
    if s.gradient_checkpointing:
        acts = tokens * (shape.layers * dt.residual * shape.hidden + per_layer + head)
        return acts, {f"{shape.layers} checkpointed layer inputs": tokens * shape.layers * dt.residual * shape.hidden,
                      "one recomputed layer": tokens * per_layer, "final norm / head input / mask": tokens * head}, 0.0
    unsaved, unshared_kv = A.frozen_prefix_bytes_per_token(shape, s, dt, layer)
    acts = tokens * (shape.layers * per_layer + head - unsaved)
    detail = {f"{part} ({shape.layers} layers)": tokens * shape.layers * b for part, b in layer.items()}
    detail["final norm / head input / mask"] = tokens * head
    if unsaved:
        detail["not saved before the first trainable tensor"] = -tokens * unsaved
    return acts, detail, unshared_kv


def estimate(cfg: dict, optim: str = "adamw") -> Estimate:
    """The estimate for a resolved run config (the dict a record keeps as run_info.config)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise ConfigError("the VRAM estimate needs a resolved run config with a `model` section")
    s = setup_from_config(cfg, optim)
    shape = model_shape(cfg["model"])
    name = cfg["model"].get("name") or cfg["model"].get("name_or_path") or "model"
    if not s.trains:
        return _eval_estimate(name, s, shape)
    dt = dtypes(s)
    ts = P.trainables(shape, s, dt)
    if not ts or not any(t.total for t in ts):
        raise ConfigError(f"method '{s.method}' leaves no trainable parameters in {name} "
                          f"(check method.peft.target_modules / method.bitfit_targets)")
    weights = P.weight_bytes(shape, s, dt)
    dora_all, dora_one = P.dora_weight_copy_bytes(shape, s)
    copies = {"bf16 copies of fp32 trainable weights": P.autocast_copy_bytes(ts, s, shape),
              "bf16 copy of the fp32 output head": A.head_copy_bytes(shape, s),
              # checkpointing drops them with the rest of a layer's saved tensors: one layer at a time
              "bf16 copies of DoRA base weights": 0.0 if s.gradient_checkpointing else dora_all}
    static = {
        "weights": sum(weights.values()),
        "trainable_params": P.trainable_param_bytes(ts),
        "gradients": P.gradient_bytes(ts),
        "optimizer_states": P.optimizer_bytes(ts, s.optim),
        "autocast_weight_copies": sum(copies.values()),
        "framework_overhead": C.TORCH_ALLOCATED_OVERHEAD_GIB * C.GIB,
    }
    tokens = s.micro_batch * s.seq_len
    layer = A.layer_bytes_per_token(shape, s, dt)
    per_layer = sum(layer.values())
    acts, act_detail, unshared_kv = _saved_activations(shape, s, dt, tokens, layer)
    kv_extra, kv_whole = A.kv_cache_bytes_per_token(shape, s, dt)
    kv_now = tokens * (shape.layers * kv_extra + (0.0 if s.gradient_checkpointing else unshared_kv))
    kv_prev = tokens * shape.layers * kv_whole if C.PREVIOUS_OUTPUT_HELD else 0.0
    logits = {k: tokens * v for k, v in A.logits_bytes_per_token(shape, s, dt).items()}
    module_tmp = A.forward_transient_bytes(shape, s, tokens) + (dora_one if s.gradient_checkpointing else 0.0)
    workspace = C.BACKWARD_WORKSPACE_LAYERS * tokens * per_layer + module_tmp
    moments = {
        "end of forward (loss computed)": (kv_now + kv_prev, logits["forward"], 0.0),
        "last layer's forward": (kv_now + kv_prev, logits["held"] if C.PREVIOUS_OUTPUT_HELD else 0.0, module_tmp),
        "start of backward (loss gradient)": (kv_now, logits["backward"], 0.0),
        "backward through a layer": (kv_now, logits["held"], workspace),
    }
    moment = max(moments, key=lambda m: sum(moments[m]))
    kv, lg, tmp = moments[moment]
    parts = {"activations": acts, "kv_cache": kv, "logits_and_loss": lg, "transient_workspace": tmp, **static}
    breakdown = {c: float(parts[c]) for c in COMPONENTS}
    details = {"weights": weights, "activations": act_detail, "autocast_weight_copies": copies,
               "trainable_params": _group(t for t in ts if not t.in_weights),
               "moments": {m: sum(v) + sum(static.values()) + acts for m, v in moments.items()}}
    return Estimate(name, s, shape, breakdown, details, moment, _assumptions(s, shape))


def _group(ts) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in ts:
        key = t.what.split(" ")[0] if t.what.startswith(("lora_", "bias")) else t.what
        out[key] = out.get(key, 0.0) + t.total * t.nbytes
    return out


def predict_peak_gib(resolved_cfg: dict, device_memory_gib: float | None = None, optim: str = "adamw") -> dict:
    """Public API for the runner: the predicted peak for a resolved run config.

    predicted_peak_gib: what torch.cuda.max_memory_allocated would report (records'
    memory.train.peak_allocated_gib); predicted_total_gib adds the CUDA context and allocator
    fragmentation (what nvidia-smi shows); fits compares the latter with device_memory_gib."""
    est = estimate(resolved_cfg, optim)
    return as_dict(est, device_memory_gib)


def as_dict(est: Estimate, device_memory_gib: float | None = None) -> dict:
    gib = {k: v / C.GIB for k, v in est.breakdown.items()}
    fits = None if device_memory_gib is None else bool(est.total_gib <= float(device_memory_gib))
    s = est.setup
    return {
        "model": est.model, "method": s.method, "predicted_peak_gib": est.peak_gib,
        "predicted_total_gib": est.total_gib, "fits": fits, "device_memory_gib": device_memory_gib,
        "breakdown": gib, "peak_moment": est.peak_moment,
        "details": {k: {kk: vv / C.GIB for kk, vv in v.items()} for k, v in est.details.items()},
        "params": {"total": est.shape.total_params},
        "setup": {"micro_batch_size": s.micro_batch, "batch_size": s.batch_size, "accumulation": s.accumulation,
                  "seq_len": s.seq_len, "gradient_checkpointing": s.gradient_checkpointing,
                  "fused_loss": s.fused_loss, "optim": s.optim, "device": s.device, "precision": s.precision,
                  "eval_batch_size": s.eval_batch},
        "assumptions": list(est.assumptions),
    }
