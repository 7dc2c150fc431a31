"""The naive loop: a hand-written fine-tuning loop of the kind many transformers+peft scripts run.

Every example is padded to cutoff_len (the tutorial `padding="max_length"` tokenisation), batches
come from a shuffled order with no length grouping, each micro-batch's loss is HF's mean over its
label tokens divided by the accumulation steps, the optimizer is torch.optim.AdamW without the
fused kernel, the loss is the model's own cross-entropy (full logits), and the model is called as
`model(**batch)` with its default KV-cache setting. bf16 autocast on CUDA, fp32 on CPU, exactly as
the harness loop does, so the comparison is about the loop and not the precision.
"""
from __future__ import annotations

import random
from contextlib import nullcontext

import torch

from harness import methods
from harness.pipeline import measure
from harness.pipeline.train import IGNORE, capped_warmup


def pad_to_cutoff(example: dict, cutoff_len: int, pad_id: int) -> dict:
    """`tok(text, truncation=True, max_length=cutoff_len, padding="max_length")` with pad labels
    masked (DataCollatorForSeq2Seq's -100). Built from the harness's token ids, so both sides
    train on exactly the same tokens and only the padding differs."""
    ids, labels = example["input_ids"], example["labels"]
    pad = cutoff_len - len(ids)
    return {"input_ids": ids + [pad_id] * pad, "labels": labels + [IGNORE] * pad,
            "attention_mask": [1] * len(ids) + [0] * pad}


def train_plain(model, tok, examples: list[dict], cfg, steps: int, device: torch.device,
                dtype: torch.dtype) -> dict:
    """Train `model` in place for `steps` optimizer steps; tokens counted as the harness counts them."""
    tcfg = cfg.train
    micro = tcfg.micro_batch_size
    accum = tcfg.batch_size // micro
    rows = [pad_to_cutoff(e, tcfg.cutoff_len, tok.pad_token_id) for e in examples]
    order = list(range(len(rows)))
    random.Random(cfg.seed).shuffle(order)  # DataLoader(shuffle=True)
    batches = [order[i:i + micro] for i in range(0, len(order), micro)]
    params = [p for p in model.parameters() if p.requires_grad]
    spec = methods.get(cfg.method.name)  # the method's own optimizer and per-step hook, as every loop uses
    opt = (spec.optimizer(model, cfg.method.lr, tcfg.weight_decay, cfg.method) if spec.optimizer else
           torch.optim.AdamW(params, lr=cfg.method.lr, weight_decay=tcfg.weight_decay, fused=False))
    from transformers import get_linear_schedule_with_warmup  # the same learning-rate trajectory as every row
    sched = get_linear_schedule_with_warmup(opt, capped_warmup(steps, tcfg.warmup_steps), steps)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and dtype == torch.bfloat16
                else nullcontext())
    model.train()
    losses, step_seconds, step_tokens = [], [], []
    for step in range(steps):
        t0 = measure.clock(device)
        step_loss, tokens = 0.0, 0
        for k in range(accum):
            mb = batches[(step * accum + k) % len(batches)]
            batch = {key: torch.tensor([rows[i][key] for i in mb]).to(device)
                     for key in ("input_ids", "attention_mask", "labels")}
            with autocast:
                out = model(**batch)
            loss = out.loss / accum
            loss.backward()
            step_loss += loss.item()
            tokens += int(batch["attention_mask"].sum())
        if tcfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, tcfg.max_grad_norm)
        opt.step()
        sched.step()
        if spec.after_step is not None:
            spec.after_step(model, step + 1)
        opt.zero_grad()
        losses.append(step_loss)
        step_seconds.append(measure.clock(device) - t0)
        step_tokens.append(tokens)
    model.eval()
    return {"steps": steps, "losses": [round(x, 5) for x in losses], "step_seconds": step_seconds,
            "step_tokens": step_tokens}
