"""Text for one estimate: the breakdown (parts that add up to the printed total), the assumptions."""
from __future__ import annotations

import math

from harness.vram import constants as C

LABELS = {
    "weights": "weights",
    "trainable_params": "trainable parameters",
    "gradients": "gradients",
    "optimizer_states": "optimizer states",
    "activations": "activations (saved for backward)",
    "kv_cache": "KV cache",
    "logits_and_loss": "logits and loss",
    "transient_workspace": "transient workspace",
    "autocast_weight_copies": "autocast weight copies",
    "framework_overhead": "framework buffers (cuBLAS workspace ...)",
}


def rounded_parts(values: dict[str, float], digits: int = 2) -> dict[str, float]:
    """Round each value so the rounded parts add up to the rounded total (largest remainder)."""
    scale = 10 ** digits
    total = round(sum(values.values()) * scale)
    floors = {k: math.floor(v * scale) for k, v in values.items()}
    short = total - sum(floors.values())
    by_remainder = sorted(values, key=lambda k: values[k] * scale - floors[k], reverse=True)
    for k in by_remainder[:max(0, short)]:
        floors[k] += 1
    return {k: v / scale for k, v in floors.items()}


def format_estimate(d: dict) -> str:
    """Human-readable text for as_dict()'s output."""
    st = d["setup"]
    lines = [f"VRAM estimate: {d['model']} ({d['params']['total'] / 1e9:.3g}B params) + {d['method']}"]
    if d["method"] == "none":
        lines += [f"evaluation only: eval.batch_size={st['eval_batch_size']}, {st['seq_len']} prompt tokens", ""]
    else:
        lines += [f"batch per forward = micro_batch_size={st['micro_batch_size']} (effective batch {st['batch_size']} via "
                  f"{st['accumulation']} accumulation step{'s' if st['accumulation'] > 1 else ''}), "
                  f"sequence = {st['seq_len']} tokens", ""]
    shown = {k: v for k, v in d["breakdown"].items() if v > 0}
    parts = rounded_parts(shown)
    width = max(len(LABELS[k]) for k in shown)
    lines.append(f"  {'component':<{width}}  {'GiB':>8}")
    for key, gib in parts.items():
        detail = d["details"].get(key) or {}
        lines.append(f"  {LABELS[key]:<{width}}  {gib:8.2f}")
        if len(detail) > 1 or key == "weights":
            sub = rounded_parts({k: v for k, v in detail.items() if abs(v) > 0}, 3)
            for what, val in sub.items():
                lines.append(f"  {'':<{width}}    {val:8.3f}  {what}")
    lines.append(f"  {'-' * width}  {'-' * 8}")
    lines.append(f"  {'predicted peak allocated':<{width}}  {sum(parts.values()):8.2f}  (at {d['peak_moment']})")
    if st["device"] == "cuda":
        lines.append(f"  {'+ CUDA context, fragmentation':<{width}}  {d['predicted_total_gib']:8.2f}  "
                     f"(nvidia-smi: x{1 + C.ALLOCATOR_FRAGMENTATION:.2f} + {C.CUDA_CONTEXT_GIB} GiB)")
    if d["fits"] is not None:
        verdict = "fits" if d["fits"] else "does NOT fit"
        lines.append(f"  {verdict} in {d['device_memory_gib']:g} GiB")
    lines += ["", "assumptions:"] + [f"  - {a}" for a in d["assumptions"]]
    return "\n".join(lines)
