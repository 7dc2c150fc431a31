"""The training loop: small and explicit (AdamW, linear warmup/decay, gradient accumulation,
clipping, bf16 autocast on GPU, fp32 on CPU, optional gradient checkpointing).

Speed without changing the objective: micro-batches are grouped by length (less padding), and the
loss of an optimizer step is the sum of token losses divided by the step's label-token count, so
how the step's examples are split into micro-batches or padded does not change the gradient.
On CUDA, liger-kernel's fused linear cross-entropy avoids materialising the full logits.
"""
from __future__ import annotations

import logging
import math
import os
import signal
import statistics
from contextlib import nullcontext

import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from harness import measure, methods, prompts
from harness.batching import IGNORE, collate, epoch_steps, split_step
from harness.distributed import Dist, merge_memory
from harness.errors import ConfigError, Diverged
from harness.train_state import Snapshots, fingerprint

log = logging.getLogger("harness.train")


def tokenize_examples(records: list[dict], tok, cutoff_len: int, train_on_inputs: bool, style: str) -> list[dict]:
    """LLM-Adapters' tokenisation, batched: truncate to cutoff_len, append EOS if there is room, and
    with train_on_inputs=False mask the prompt (its length measured by tokenising it alone)."""
    if not records:
        return []
    full = [prompts.train_prompt(r["instruction"], r["input"], r["output"], style) for r in records]
    all_ids = tok(full, truncation=True, max_length=cutoff_len)["input_ids"]
    if not train_on_inputs:
        users = [prompts.train_prompt(r["instruction"], r["input"], "", style) for r in records]
        n_users = [len(ids) for ids in tok(users, truncation=True, max_length=cutoff_len)["input_ids"]]
    out = []
    for k, ids in enumerate(all_ids):
        if ids and ids[-1] != tok.eos_token_id and len(ids) < cutoff_len:
            ids = ids + [tok.eos_token_id]
        labels = list(ids)
        if not train_on_inputs:
            labels = [IGNORE] * n_users[k] + labels[n_users[k]:]
        out.append({"input_ids": ids, "labels": labels})
    return out


def schedule(optimizer, total_steps: int, warmup_steps: int):
    """transformers' linear schedule (warmup from 0, as LLM-Adapters' Trainer runs it), with the warmup
    capped at a tenth of a short run (LLM-Adapters' 100 warmup steps would be all of a 20-step run)."""
    warmup = min(warmup_steps, max(1, total_steps // 10))
    return get_linear_schedule_with_warmup(optimizer, warmup, total_steps), warmup


def accumulation_steps(tcfg, world: int = 1) -> int:
    """Micro-batches per optimizer step (batch sizes are checked by harness.validate; the number of
    processes is only known once launched)."""
    if (tcfg.batch_size // tcfg.micro_batch_size) % world:
        raise ConfigError(f"with {world} processes, train.batch_size ({tcfg.batch_size}) must be a multiple of "
                          f"train.micro_batch_size x processes ({tcfg.micro_batch_size * world})")
    return tcfg.batch_size // tcfg.micro_batch_size


def total_steps(tcfg, examples: int) -> int:
    """Optimizer steps of a run: train.max_steps when set (whatever train.epochs says), else
    ceil(epochs x examples / batch_size)."""
    return tcfg.max_steps if tcfg.max_steps > 0 else math.ceil(tcfg.epochs * examples / tcfg.batch_size)


def use_liger(model, tcfg, device) -> bool:
    """Patch in liger-kernel's fused linear cross-entropy where asked and possible (CUDA only;
    harness.validate refuses fused_loss=liger elsewhere)."""
    if tcfg.fused_loss == "torch" or device.type != "cuda":
        return False
    try:
        from liger_kernel.transformers import _apply_liger_kernel_to_instance
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        _apply_liger_kernel_to_instance(model=base, fused_linear_cross_entropy=True, cross_entropy=False,
                                        rms_norm=False, swiglu=False, rope=False)
        return True
    except Exception as exc:  # not installed, or an architecture liger does not know
        if tcfg.fused_loss == "liger":
            raise ConfigError(f"train.fused_loss=liger failed: {exc}") from exc
        log.info("liger-kernel unavailable (%s); using the standard loss", exc)
        return False


def _fault(step: int, method: str) -> str | None:
    """Test hook: PEFT_BENCH_INJECT_FAULT=oom@3 (or nan@2, kill@4, or oom@3:lora for one method only)
    simulates a CUDA out-of-memory error, a NaN loss or a kill -9 at that optimizer step."""
    spec = os.environ.get("PEFT_BENCH_INJECT_FAULT", "")
    kind, _, rest = spec.partition("@")
    at, _, only = rest.partition(":")
    if not spec or not at.isdigit() or int(at) != step or (only and only != method):
        return None
    return kind


def _inject_fault(loss, step: int, method: str):
    fault = _fault(step, method)
    if fault == "oom":
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by PEFT_BENCH_INJECT_FAULT)")
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return loss * float("nan") if fault == "nan" else loss


def make_optimizer(model, params: list, lr: float, tcfg, method_cfg, device: torch.device):
    """The method's own optimizer when its registry entry has one (LoRA+'s learning-rate ratio),
    else AdamW (fused on CUDA)."""
    spec = methods.get(method_cfg.name) if method_cfg is not None else None
    if spec is not None and spec.optimizer is not None:
        return spec.optimizer(model, lr, tcfg.weight_decay, method_cfg)
    return torch.optim.AdamW(params, lr=lr, weight_decay=tcfg.weight_decay,
                             fused=device.type == "cuda" and all(p.is_cuda for p in params))


def train(model, tok, examples: list[dict], tcfg, lr: float, seed: int, device: torch.device,
          dtype: torch.dtype, flops_per_token: float | None = None, on_log=None, method_cfg=None,
          dist: Dist | None = None, snapshots: Snapshots | None = None, validate=None) -> dict:
    """Train in place (resuming from `snapshots` when they hold this run's state); return the
    train_info part of the record. Throughput and memory cover the steps this process ran.
    `validate()` (the validation loss) runs every train.eval_every steps and at the end, off the clock."""
    dist = dist or Dist()
    snapshots = snapshots or Snapshots(None)
    accum = accumulation_steps(tcfg, dist.world)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("the method left no trainable parameters")
    n = len(examples)
    steps_total = total_steps(tcfg, n)
    method = method_cfg.name if method_cfg is not None else ""
    spec = methods.get(method) if method else None
    opt = make_optimizer(model, params, lr, tcfg, method_cfg, device)
    model, opt = dist.prepare(model, opt)  # DDP / FSDP wrapping when launched with several processes
    params = [p for p in model.parameters() if p.requires_grad]
    sched, warmup = schedule(opt, steps_total, tcfg.warmup_steps)
    # bf16: weights loaded in bf16 (harness.models) and every matmul under autocast, trainable fp32
    # parameters included; on CPUs with AMX / AVX512-BF16 that is about twice fp32's speed
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype == torch.bfloat16 else nullcontext()
    if dist.world > 1 and tcfg.max_tokens_per_batch:
        raise ConfigError("train.max_tokens_per_batch gives steps a varying number of forwards; several "
                          "processes need the same number each: leave it 0 with several processes")
    liger = use_liger(dist.unwrap(model), tcfg, device)
    forward = torch.compile(model) if tcfg.compile else model
    lengths = [len(e["input_ids"]) for e in examples]
    pad_id = tok.pad_token_id
    expected = fingerprint(dist.unwrap(model), steps_total, n, accum * dist.world)
    start, losses, samples_before = snapshots.load(dist.unwrap(model), opt, sched, expected)

    def steps():
        epoch = 0
        while True:
            for step in epoch_steps(lengths, tcfg.batch_size, seed + epoch, tcfg.group_by_length):
                forwards = split_step(step, lengths, tcfg.micro_batch_size, tcfg.max_tokens_per_batch, tcfg.packing)
                if dist.world > 1 and len(forwards) < accum:
                    break  # every rank needs its share of micro-batches: drop a short last step
                yield forwards  # a short last step is normalised by its own tokens
            epoch += 1

    model.train()
    step_times, step_tokens, real_tokens, padded_tokens, samples, snapshot_seconds = [], [], 0, 0, 0, 0.0
    val_losses: list[dict] = []
    memory = measure.PhaseMemory(device).start()
    # a live bar with ETA on a terminal; nothing when output is a file (the log lines stay)
    bar = tqdm(total=steps_total, initial=start, desc="train", unit="step", disable=None if dist.main else True,
               dynamic_ncols=True, leave=False)
    t_start = measure.clock(device)
    for step, group in zip(range(steps_total), steps()):
        if step < start:  # taken before the snapshot: same batches, skipped
            continue
        t0 = measure.clock(device)
        mine = group[dist.rank::dist.world]  # this rank's share of the step's micro-batches
        batches = [collate([examples[i] for i in mb], pad_id, device, tcfg.packing) for mb in mine]
        step_items = max(1.0, dist.sum(sum(b["counts"]["items"] for b in batches)))  # all ranks' label tokens
        step_loss = torch.zeros((), device=device)
        step_tokens.append(sum(b["counts"]["real"] for b in batches))
        for k, b in enumerate(batches):
            items = b["counts"]["items"]
            with dist.no_sync(model, last=k == len(batches) - 1):
                with autocast:
                    # use_cache=False: a KV cache is useless in training and costs memory
                    out = forward(**b["inputs"], use_cache=False)
                # HF returns the mean over this micro-batch's tokens; rescale to sum / step tokens
                loss = _inject_fault(out.loss * (items / step_items), step + 1, method)
                del out  # drop the logits before the backward pass and the next forward
                dist.backward(loss * dist.world)  # DDP averages gradients over ranks; we want the sum
            step_loss += loss.detach()
            del loss
            real_tokens += b["counts"]["real"]
            padded_tokens += b["counts"]["padded"]
            samples += b["counts"]["rows"]
        step_loss = dist.sum(float(step_loss))  # one synchronisation per step
        if not math.isfinite(step_loss):  # checked on the all-ranks loss, so every rank stops together
            raise Diverged(step + 1, step_loss)
        grad_norm = dist.clip(params, tcfg.max_grad_norm) if tcfg.max_grad_norm > 0 else None
        opt.step()
        sched.step()
        if spec is not None and spec.after_step is not None:  # e.g. AdaLoRA's rank-budget update
            spec.after_step(dist.unwrap(model), step + 1)
        opt.zero_grad(set_to_none=True)
        step_times.append(measure.clock(device) - t0)
        losses.append(step_loss)
        bar.update(1)
        bar.set_postfix(loss=f"{step_loss:.4f}", refresh=False)
        if validate is not None and ((tcfg.eval_every and (step + 1) % tcfg.eval_every == 0)
                                     or step + 1 == steps_total):
            t_val = measure.clock(device)
            val_losses.append({"step": step + 1, "loss": validate()})
            snapshot_seconds += measure.clock(device) - t_val  # not training time
            if on_log:
                on_log(step + 1, {"val/loss": val_losses[-1]["loss"]})
        if dist.sum(float(snapshots.due(step + 1))):  # ranks agree (time-based); its time is not training time
            t_snap = measure.clock(device)
            snapshots.save(step + 1, dist.unwrap(model), opt, sched, losses, samples_before + dist.sum(samples),
                           expected)
            dist.barrier()
            snapshot_seconds += measure.clock(device) - t_snap
        if (step + 1) % tcfg.log_every == 0 or step + 1 == steps_total:
            log.info("step %d/%d  loss %.4f  lr %.2e  %.0f tok/s", step + 1, steps_total, step_loss,
                     sched.get_last_lr()[0], real_tokens / (measure.clock(device) - t_start))
        if on_log and ((step + 1) % tcfg.log_every == 0 or step + 1 == steps_total):
            on_log(step + 1, {"train/loss": step_loss, "train/lr": sched.get_last_lr()[0],
                              "train/grad_norm": float(grad_norm) if grad_norm is not None else None,
                              "train/step_seconds": step_times[-1], **{f"train/{k}": v for k, v in memory.read().items()}})
    wall = measure.clock(device) - t_start - snapshot_seconds
    bar.close()
    model.eval()
    real_tokens, padded_tokens, samples = (int(dist.sum(x)) for x in (real_tokens, padded_tokens, samples))
    per_second = (lambda x: round(x / wall, 4) if step_times else None)  # noqa: E731 (none when resumed at the end)
    # the first step pays one-off costs (allocator growth, kernel selection, torch.compile's compilation)
    after_first = (round(dist.sum(sum(step_tokens[1:])) / sum(step_times[1:]), 4)
                   if len(step_times) > 1 and sum(step_times[1:]) > 0 else None)
    info = {
        "steps": len(losses), "epochs_seen": round((samples_before + samples) / n, 4), "examples": n,
        "resumed_from_step": start, "snapshots_saved": snapshots.saved, "snapshot_seconds": round(snapshot_seconds, 3),
        "accumulation": accum, "warmup_steps": warmup, "lr": lr,
        "loss_first": losses[0], "loss_last": losses[-1],
        "loss_mean_last10": statistics.fmean(losses[-10:]), "losses": [round(x, 5) for x in losses],
        "validation_loss": val_losses,
        "fused_loss": "liger" if liger else "torch", "compiled": tcfg.compile,
        "precision": str(dtype).replace("torch.", ""), "autocast": dtype == torch.bfloat16,
        "packing": tcfg.packing, "max_tokens_per_batch": tcfg.max_tokens_per_batch,
        "group_by_length": tcfg.group_by_length,
        "memory": merge_memory(dist.gather(memory.read())),
        "processes": dist.world,
        "throughput": {
            "wall_seconds": round(wall, 4), "steps_timed": len(step_times),
            "median_step_seconds": round(statistics.median(step_times), 5) if step_times else None,
            "first_step_seconds": round(step_times[0], 5) if step_times else None,
            "step_seconds": [round(t, 5) for t in step_times], "step_tokens": step_tokens,
            "tokens_per_second_after_first": after_first,
            "tokens_per_second": per_second(real_tokens),
            "padded_tokens_per_second": per_second(padded_tokens),
            "samples_per_second": per_second(samples),
            "real_tokens": real_tokens, "padded_tokens": padded_tokens, "samples": samples,
        },
    }
    if flops_per_token:
        info["throughput"]["flops_per_token"] = flops_per_token
        peak = measure.device_peak_tflops(device)
        tps = info["throughput"]["tokens_per_second"]
        info["throughput"]["mfu"] = round(tps * flops_per_token / (peak * 1e12), 5) if peak and tps else None
    return info
