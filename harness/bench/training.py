"""One method's training comparison: the plain loop, then the harness loop, each on its own model.

Each side builds a fresh model (harness.models.load + the method, same seed), runs one untimed
warm-up step (kernel selection, allocator growth, lazy initialisation), then the timed steps with
the peak-memory counter reset just before them. The model is freed between sides.
Tokens/s divide by the time of the timed steps as each loop clocks them (device synchronised),
so per-run setup (optimizer construction, batch planning, the harness's memory release before its
training phase) counts on neither side: it is paid once per run, not per step.
"""
from __future__ import annotations

import torch
from omegaconf import OmegaConf
from transformers import set_seed

from harness import measure, methods, models
from harness.bench import TARGET_MEMORY_RATIO, TARGET_TRAIN_SPEEDUP
from harness.bench.plain import train_plain
from harness.train import tokenize_examples, train

SIDES = ("plain", "harness")


def build(cfg, device: torch.device, dtype: torch.dtype):
    """(model with the method applied, tokenizer, load info), seeded as harness.runner does."""
    set_seed(cfg.seed)
    model, tok, info = models.load(cfg.model, cfg.method, device, dtype, cfg.cache_dir)
    set_seed(cfg.seed)
    ctx = methods.MethodContext(tokenizer=tok, model_ref=info["resolved_path"], device=device,
                                gradient_checkpointing=cfg.train.gradient_checkpointing)
    prepared = methods.apply(model, cfg.method, ctx)
    return prepared.model, tok, info


def harness_loop(model, tok, examples, cfg, steps, device, dtype) -> dict:
    tcfg = OmegaConf.merge(cfg.train, {"max_steps": steps, "log_every": max(1, steps)})
    info = train(model, tok, examples, tcfg, cfg.method.lr, cfg.seed, device, dtype, method_cfg=cfg.method)
    tp = info["throughput"]
    return {"steps": info["steps"], "losses": info["losses"], "real_tokens": tp["real_tokens"],
            "padded_tokens": tp["padded_tokens"], "fused_loss": info["fused_loss"],
            "loop_seconds": tp["wall_seconds"]}


LOOPS = {"plain": train_plain, "harness": harness_loop}


def run_side(side: str, cfg, records: list[dict], steps: int, device: torch.device, dtype: torch.dtype) -> dict:
    model, tok, _ = build(cfg, device, dtype)
    t = cfg.train
    examples = tokenize_examples(records, tok, t.cutoff_len, t.train_on_inputs, t.prompt_style)
    loop = LOOPS[side]
    set_seed(cfg.seed)
    loop(model, tok, examples, cfg, 1, device, dtype)  # warm-up step, not timed
    measure.release(device)  # the warm-up's optimizer state is gone; do not count it in the timed peak
    set_seed(cfg.seed)
    memory = measure.PhaseMemory(device).start()
    t0 = measure.clock(device)
    out = loop(model, tok, examples, cfg, steps, device, dtype)
    call_seconds = measure.clock(device) - t0  # with setup: kept for transparency
    mem = memory.read()
    del model
    measure.release(device)
    seconds = out.pop("loop_seconds")
    return {**out, "seconds": round(seconds, 4), "call_seconds": round(call_seconds, 4),
            "tokens_per_second": round(out["real_tokens"] / seconds, 2),
            "padded_fraction": round(1 - out["real_tokens"] / max(1, out["padded_tokens"]), 4),
            "peak_gib": mem.get(measure.peak_key(device)), "memory": mem,
            "loss_last": out["losses"][-1] if out["losses"] else None}


def compare_method(cfg, records: list[dict], steps: int, device: torch.device) -> dict:
    """The training row of one method (status failed with the error if either side raised)."""
    dtype = models.compute_dtype(device, cfg.train.precision)
    row = {"method": cfg.method.name, "status": "ok", "error": None,
           "method_config": OmegaConf.to_container(cfg.method, resolve=True)}
    error = None
    try:
        for side in SIDES:
            row[side] = run_side(side, cfg, records, steps, device, dtype)
    except Exception as exc:  # noqa: BLE001 - one method failing (OOM, say) must not end the bench
        error = f"{type(exc).__name__}: {exc}"[:1000]
    if error:  # released here, not in the except block, whose traceback still holds the failed model
        measure.release(device)
        row.update(status="failed", error=error, flags=["failed"])
        return row
    plain, harness = row["plain"], row["harness"]
    row["speedup"] = round(harness["tokens_per_second"] / plain["tokens_per_second"], 3)
    row["memory_ratio"] = (round(harness["peak_gib"] / plain["peak_gib"], 3)
                           if harness["peak_gib"] and plain["peak_gib"] else None)
    row["same_tokens"] = plain["real_tokens"] == harness["real_tokens"]
    row["flags"] = flags(row)
    return row


def flags(row: dict) -> list[str]:
    out = []
    if row["speedup"] < TARGET_TRAIN_SPEEDUP:
        out.append(f"below {TARGET_TRAIN_SPEEDUP:g}× target")
    if row["memory_ratio"] is not None and row["memory_ratio"] > TARGET_MEMORY_RATIO:
        out.append("more memory than plain")
    if not row["same_tokens"]:
        out.append("token counts differ")
    return out
