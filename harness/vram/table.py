"""The requirement table: full / LoRA / QLoRA-8 / QLoRA-4 for LLaMA-shaped 7B..110B models, beside
the figures of a widely shared reference table (bf16, AdamW; harness/data/published/README.md)."""
from __future__ import annotations

from harness.vram import constants as C
from harness.vram.compose import compose_run_config
from harness.vram.estimate import as_dict, estimate

SIZES = (("7B", "llama-7b.json"), ("13B", "llama-13b.json"), ("30B", "llama-30b.json"),
         ("70B", "llama-70b.json"), ("110B", "llama-110b.json"))
ROWS = (("Full 16-bit", "full"), ("LoRA 16-bit", "lora"), ("QLoRA 8-bit", "qlora8"), ("QLoRA 4-bit", "qlora4"))
REFERENCE_GB = {
    "full": (67, 125, 288, 672, 1056),
    "lora": (15, 28, 63, 146, 229),
    "qlora8": (9, 17, 38, 88, 138),
    "qlora4": (5, 9, 20, 46, 72),
}
TABLE_BATCH, TABLE_SEQ = 1, 512
TABLE_OVERRIDES = (f"train.micro_batch_size={TABLE_BATCH}", f"train.batch_size={TABLE_BATCH}",
                   f"train.cutoff_len={TABLE_SEQ}", "train.fused_loss=torch", "train.gradient_checkpointing=false",
                   "device=cuda")


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def table_rows(optim: str = "adamw", extra_overrides=()) -> list[dict]:
    """One row per (method, size). extra_overrides (e.g. train.gradient_checkpointing=true) replace
    the table's own settings; model= and method= are the table's."""
    extra = [o for o in extra_overrides if _key(o) not in ("model", "method")]
    defaults = [o for o in TABLE_OVERRIDES if _key(o) not in {_key(e) for e in extra}]
    rows = []
    for label, method in ROWS:
        for (size, config_file), ref in zip(SIZES, REFERENCE_GB[method]):
            cfg = compose_run_config([f"method={method}", "model=llama-7b", f"model.config_file={config_file}",
                                      f"model.name=llama-{size.lower()}", *defaults, *extra])
            d = as_dict(estimate(cfg, optim))
            total_gb = d["predicted_total_gib"] * C.GIB / 1e9
            rows.append({"row": label, "method": method, "size": size, "config_file": config_file,
                         "params": d["params"]["total"], "peak_allocated_gib": d["predicted_peak_gib"],
                         "predicted_total_gib": d["predicted_total_gib"], "predicted_total_gb": total_gb,
                         "reference_gb": ref, "ratio": total_gb / ref, "setup": d["setup"]})
    return rows


def format_table(rows: list[dict], optim: str = "adamw") -> str:
    sizes = [s for s, _ in SIZES]
    out = ["| Method | " + " | ".join(sizes) + " |", "|---|" + "---|" * len(sizes)]
    for label, method in ROWS:
        cells = []
        for size in sizes:
            r = next(r for r in rows if r["method"] == method and r["size"] == size)
            cells.append(f"{r['predicted_total_gb']:.0f} / {r['reference_gb']} ({r['ratio']:.2f}x)")
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    params = {r["size"]: r["params"] for r in rows if r["method"] == "full"}
    st = rows[0]["setup"]
    out += [
        "",
        "Each cell: **ours GB / reference GB (ours ÷ reference)**. GB = 10^9 bytes; ours is the predicted",
        "nvidia-smi total (peak allocated + CUDA context + allocator fragmentation) from "
        "`python -m harness.vram --table`.",
        f"Assumptions: batch {st['micro_batch_size']} per forward, sequence {st['seq_len']} tokens, "
        f"{st['precision']} weights{' and autocast' if st['precision'] == 'bf16' else ''}, optimizer {optim}, "
        f"gradient checkpointing {'on' if st['gradient_checkpointing'] else 'off'}, "
        + ("liger fused loss" if st["fused_loss"] == "liger" else "logits materialised (no fused loss)")
        + "; full = fp32 master weights, gradients and AdamW states with bf16 autocast copies (18 bytes/param, as transformers' Trainer with bf16=True); LoRA/QLoRA = this harness's recipe (r=32 on "
        "q,k,v,up,down; adapters, their gradients and AdamW states fp32); QLoRA-4 = NF4 with double quantisation; "
        "QLoRA-8 = LLM.int8; non-quantised parameters fp32 after prepare_model_for_kbit_training.",
        "Models: LLaMA-7B/13B/33B, Llama-2-70B (GQA) and a LLaMA-shaped 110B (Qwen1.5-110B dimensions), counted "
        "from harness/model_configs on the meta device: " + ", ".join(f"{s} = {p / 1e9:.1f}B" for s, p in params.items())
        + ".",
        "Reference: a widely shared VRAM requirement table (bf16, AdamW), see harness/data/published/README.md; "
        "its batch and sequence assumptions are not stated.",
    ]
    return "\n".join(out)
