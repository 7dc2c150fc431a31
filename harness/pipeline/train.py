"""Training through `transformers.Trainer`, the loop the field runs every day, configured for the
hardware the way a careful user would configure it, and measured through callbacks.

What the harness adds is configuration, chosen here once per run and recorded (`Levers`):
- precision: bf16 autocast (Trainer's `bf16=True`) with fp32 weights that train and, for methods
  with a frozen base, the base stored in bf16 (harness.pipeline.models); fp32 where bf16 is not fast;
- length grouping (`train_sampling_strategy="group_by_length"`): steps of examples of similar
  length, less padding; or padding-free batches (`DataCollatorWithFlattening`): each micro-batch
  one packed row whose position ids restart per example, from which transformers builds a
  block-diagonal mask, so examples never attend to each other;
- fused AdamW where torch has it (`adamw_torch_fused`), liger-kernel's fused linear
  cross-entropy on CUDA, `torch_compile` on request;
- the objective: Trainer's `num_items_in_batch` makes each micro-batch's loss its token sum over
  the step's label-token count (over every process), so how a step is split into micro-batches,
  padded or packed does not change the gradient (tested);
- the schedule: linear warmup and decay, the warmup capped at a tenth of a short run;
- `train.max_steps` > 0 is Trainer's `max_steps` (cycling over the data); else
  ceil(epochs x examples / batch_size) steps.
Methods own what they need beyond their layers: an optimizer (LoRA+) through `optimizers=`, a
per-step hook (AdaLoRA's rank budget) through a callback.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import signal
import statistics
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from datasets import Dataset
from transformers import (DataCollatorForSeq2Seq, DataCollatorWithFlattening, PrinterCallback, Trainer,
                          TrainerCallback, TrainingArguments)

from harness import methods
from harness.errors import ConfigError
from harness.pipeline import measure, prompts
from harness.pipeline.distributed import Dist, merge_memory
from harness.pipeline.train_measure import StepMeter
from harness.pipeline.train_state import BestWeights, Checkpoints, fingerprint

log = logging.getLogger("harness.pipeline.train")
IGNORE = -100


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


def capped_warmup(total_steps: int, warmup_steps: int) -> int:
    """LLM-Adapters' 100 warmup steps would be all of a 20-step run: at most a tenth of the run."""
    return min(warmup_steps, max(1, total_steps // 10))


def accumulation_steps(tcfg, world: int = 1) -> int:
    """Micro-batches per optimizer step and process (harness.config.checks.check_processes made sure they
    divide evenly before the run started)."""
    return tcfg.batch_size // tcfg.micro_batch_size // world


def total_steps(tcfg, examples: int) -> int:
    """Optimizer steps of a run: train.max_steps when set (whatever train.epochs says), else
    ceil(epochs x examples / batch_size)."""
    return tcfg.max_steps if tcfg.max_steps > 0 else math.ceil(tcfg.epochs * examples / tcfg.batch_size)


@dataclass(frozen=True)
class Levers:
    """How Trainer is configured for this run and this hardware (recorded in train_info.levers)."""
    precision: str  # bf16: autocast, fp32 weights that train; fp32
    optim: str  # Trainer's optimizer name (the method's own optimizer replaces it when it has one)
    sampling: str  # group_by_length | random
    packing: bool  # DataCollatorWithFlattening
    liger: bool  # liger-kernel fused linear cross-entropy
    compile: bool  # Trainer's torch_compile
    gradient_checkpointing: bool  # switched on by harness.methods.apply, the way the method needs it
    # peft casts each adapter layer's input to the adapter's dtype (bf16 activations -> fp32 for fp32
    # adapter weights); under autocast the matmul casts it straight back, so the casts (and a dropout
    # mask in fp32) are wasted work: off under bf16 autocast (peft's disable_input_dtype_casting)
    peft_input_casting: bool


def liger_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import liger_kernel  # noqa: F401
        return True
    except ImportError:
        return False


def choose_levers(tcfg, device: torch.device, dtype: torch.dtype) -> Levers:
    """The settings a careful user sets on this hardware, from train.* (auto values resolved here)."""
    fused_loss = str(tcfg.fused_loss)
    if fused_loss == "liger" and not liger_available(device):
        raise ConfigError("train.fused_loss=liger needs a CUDA device and liger-kernel installed "
                          "(pip install 'peft-bench[gpu]'); use train.fused_loss=auto or torch")
    fused_optimizer = tcfg.fused_optimizer if tcfg.fused_optimizer is not None else device.type == "cuda"
    return Levers(precision="bf16" if dtype == torch.bfloat16 else "fp32",
                  optim="adamw_torch_fused" if fused_optimizer else "adamw_torch",
                  sampling="group_by_length" if tcfg.group_by_length else "random", packing=bool(tcfg.packing),
                  liger=fused_loss == "liger" or (fused_loss == "auto" and liger_available(device)),
                  compile=bool(tcfg.compile), gradient_checkpointing=bool(tcfg.gradient_checkpointing),
                  peft_input_casting=dtype != torch.bfloat16)


def _fault(step: int, method: str) -> str | None:
    """Test hook: PEFT_BENCH_INJECT_FAULT=oom@3 (or nan@2, kill@4, or oom@3:lora for one method only)
    simulates a CUDA out-of-memory error, a NaN loss or a kill -9 in that optimizer step."""
    spec = os.environ.get("PEFT_BENCH_INJECT_FAULT", "")
    kind, _, rest = spec.partition("@")
    at, _, only = rest.partition(":")
    if not spec or not at.isdigit() or int(at) != step or (only and only != method):
        return None
    return kind


class HarnessTrainer(Trainer):
    """Trainer, plus: every micro-batch's loss and tokens go to the StepMeter, test faults, and a
    checkpoint of a frozen-base model that is not a peft model (bottleneck adapters, BitFit) holds
    only the weights that train (Trainer's loader takes them back with strict=False)."""

    meter: StepMeter
    method: str = ""
    trainable_only: bool = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        fault = _fault(self.state.global_step + 1, self.method)
        if fault == "oom":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by PEFT_BENCH_INJECT_FAULT)")
        if fault == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        loss = super().compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        value = loss[0] if return_outputs else loss
        if fault == "nan":
            value = value * float("nan")
            loss = (value, loss[1]) if return_outputs else value
        if model.training:
            self.meter.add_forward(value, inputs)
        return loss

    def _save(self, output_dir=None, state_dict=None):
        if self.trainable_only and state_dict is None:
            unwrapped = self.accelerator.unwrap_model(self.model)
            state_dict = {n: p.detach() for n, p in unwrapped.named_parameters() if p.requires_grad}
            if self.args.should_save:
                from safetensors.torch import save_file
                os.makedirs(output_dir, exist_ok=True)
                save_file({k: v.contiguous().cpu() for k, v in state_dict.items()},
                          os.path.join(output_dir, "model.safetensors"), metadata={"format": "pt"})
            return
        super()._save(output_dir, state_dict)


class MethodStep(TrainerCallback):
    """A method's per-step hook (AdaLoRA's rank budget) after the optimizer step, before the
    gradients are cleared, with the number of the step just taken."""

    def __init__(self, model, after_step):
        self.model, self.after_step = model, after_step

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.after_step(self.model, state.global_step + 1)


class Collator:
    """Trainer's collators on the harness's examples: padded rows (right padding, labels padded
    with -100) or one packed row per micro-batch. Only input_ids and labels are passed on."""

    def __init__(self, tok, packing: bool):
        # a copy padding right, whatever side the caller's tokenizer pads (evaluation sets it left):
        # left padding would make each padded row's first real token a target predicted from padding
        tok = copy.copy(tok)
        tok.padding_side = "right"
        self.inner = (DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE) if packing else
                      DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE, return_tensors="pt"))

    def __call__(self, features):
        return self.inner([{"input_ids": f["input_ids"], "labels": f["labels"]} for f in features])


def arguments(tcfg, levers: Levers, *, lr: float, seed: int, steps: int, warmup: int, accumulation: int,
              device: torch.device, output_dir: str, checkpoints: Checkpoints) -> TrainingArguments:
    """TrainingArguments of one run: every flag from the run's config and levers."""
    gpu = device.type == "cuda"
    return TrainingArguments(
        output_dir=output_dir, max_steps=steps, per_device_train_batch_size=tcfg.micro_batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=lr, lr_scheduler_type="linear",
        warmup_steps=warmup, weight_decay=tcfg.weight_decay, max_grad_norm=tcfg.max_grad_norm,
        optim=levers.optim, bf16=levers.precision == "bf16", use_cpu=not gpu, seed=seed, data_seed=seed,
        train_sampling_strategy=levers.sampling, length_column_name="length",
        torch_compile=levers.compile, use_liger_kernel=levers.liger,
        liger_kernel_config={"fused_linear_cross_entropy": True, "cross_entropy": False, "rms_norm": False,
                             "swiglu": False, "rope": False} if levers.liger else None,
        logging_strategy="steps", logging_steps=tcfg.log_every, logging_nan_inf_filter=False,
        save_strategy="steps" if checkpoints.enabled else "no",
        save_steps=checkpoints.every_steps or 10 ** 9, save_total_limit=1,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0, dataloader_pin_memory=gpu,
        remove_unused_columns=False, average_tokens_across_devices=True)


@contextmanager
def no_kv_cache(model):
    """A KV cache is useless in training and costs memory; generation turns it back on."""
    config = getattr(model, "config", None)
    before = getattr(config, "use_cache", None)
    if config is not None:
        config.use_cache = False
    try:
        yield
    finally:
        if config is not None:
            config.use_cache = before


def train(model, tok, examples: list[dict], tcfg, *, lr: float, seed: int, device: torch.device,
          dtype: torch.dtype, method_cfg, flops_per_token: float | None = None, on_log=None,
          dist: Dist | None = None, checkpoints: Checkpoints | None = None, validate=None, vcfg=None,
          save_full_to: str | None = None) -> dict:
    """Train `model` in place with Trainer (resuming from `checkpoints` when they hold this run's
    state); return the train_info part of the record. `validate()` (the validation loss) runs every
    `vcfg.every` steps and at the end, off the clock; with `vcfg.keep_best` training ends with the
    weights of the lowest one. `save_full_to`: FSDP gathers the sharded weights into that directory
    at the end."""
    dist = dist or Dist()
    checkpoints = checkpoints or Checkpoints(None)
    accumulation = accumulation_steps(tcfg, dist.world)
    if not any(p.requires_grad for p in model.parameters()):
        raise ConfigError("the method left no trainable parameters")
    spec = methods.get(method_cfg.name)
    n, steps = len(examples), total_steps(tcfg, len(examples))
    warmup = capped_warmup(steps, tcfg.warmup_steps)
    levers = choose_levers(tcfg, device, dtype)
    expected = fingerprint(model, steps, n, accumulation * dist.world)
    resume_from, done = checkpoints.latest(expected)
    checkpoints.start(expected)
    best = (BestWeights(model, checkpoints.directory if checkpoints.enabled else None)
            if validate is not None and vcfg is not None and vcfg.keep_best else None)

    def validate_at(step: int) -> float:
        loss = validate()
        if best is not None:
            best.offer(step, loss)
        return loss
    meter = StepMeter(device, dist, steps, len(done["losses"]), done["losses"], done["samples"], tcfg.log_every,
                      on_log=on_log, validate=validate_at if validate is not None else None,
                      validate_every=vcfg.every if vcfg is not None else 0)
    callbacks = [meter, checkpoints.callback(meter.steps_so_far, agree=lambda due: dist.sum(float(due)) > 0)]
    if spec.after_step is not None:
        callbacks.append(MethodStep(model, spec.after_step))
    optimizer = spec.optimizer(model, lr, tcfg.weight_decay, method_cfg) if spec.optimizer else None
    dataset = Dataset.from_list([{**e, "length": len(e["input_ids"])} for e in examples])
    from peft.helpers import disable_input_dtype_casting
    with (tempfile.TemporaryDirectory() as scratch, no_kv_cache(model),
          disable_input_dtype_casting(model, active=not levers.peft_input_casting)):
        output_dir = str(checkpoints.directory) if checkpoints.enabled else scratch
        args = arguments(tcfg, levers, lr=lr, seed=seed, steps=steps, warmup=warmup, accumulation=accumulation,
                         device=device, output_dir=output_dir, checkpoints=checkpoints)
        trainer = HarnessTrainer(model=model, args=args, train_dataset=dataset, data_collator=Collator(tok, levers.packing),
                                 callbacks=callbacks, optimizers=(optimizer, None))
        trainer.remove_callback(PrinterCallback)  # Trainer's log dicts on stdout: the StepMeter logs instead
        trainer.meter, trainer.method = meter, method_cfg.name
        trainer.trainable_only = spec.frozen_base and not hasattr(model, "peft_config")
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        if save_full_to:
            trainer.save_model(save_full_to)
    model.eval()
    info = train_info(meter, levers, steps=steps, examples=n, warmup=warmup, lr=lr, accumulation=accumulation,
                      resumed_from=len(done["losses"]), saved=callbacks[1].saved, dist=dist, device=device,
                      flops_per_token=flops_per_token, tcfg=tcfg)
    if best is not None:
        info["validation_best"] = best.restore(len(meter.losses))
    return info


def train_info(meter: StepMeter, levers: Levers, *, steps: int, examples: int, warmup: int, lr: float,
               accumulation: int, resumed_from: int, saved: int, dist: Dist, device, flops_per_token, tcfg) -> dict:
    """The record's train_info: what happened, and the throughput of the steps this process ran."""
    losses, times = meter.losses, meter.step_seconds
    wall = sum(times)
    real, padded, rows = (int(dist.sum(meter.totals[k])) for k in ("real", "padded", "rows"))
    per_second = (lambda x: round(x / wall, 4) if times and wall else None)  # noqa: E731 (none when resumed at the end)
    # the first step pays one-off costs (allocator growth, kernel selection, torch.compile's compilation)
    after_first = (round(dist.sum(sum(meter.step_tokens[1:])) / sum(times[1:]), 4)
                   if len(times) > 1 and sum(times[1:]) > 0 else None)
    info = {
        "engine": "transformers.Trainer", "levers": asdict(levers),
        "steps": len(losses), "max_steps": steps, "epochs_seen": round(meter.steps_so_far()["samples"] / examples, 4),
        "examples": examples, "resumed_from_step": resumed_from, "snapshots_saved": saved,
        "snapshot_seconds": round(meter.excluded_seconds, 3), "accumulation": accumulation * dist.world,
        "warmup_steps": warmup, "lr": lr,
        "loss_first": losses[0], "loss_last": losses[-1], "loss_mean_last10": statistics.fmean(losses[-10:]),
        "losses": [round(x, 5) for x in losses], "validation_loss": meter.validation_loss,
        "fused_loss": "liger" if levers.liger else "torch", "compiled": levers.compile,
        "precision": "bfloat16" if levers.precision == "bf16" else "float32", "autocast": levers.precision == "bf16",
        "packing": levers.packing, "group_by_length": levers.sampling == "group_by_length",
        "memory": merge_memory(dist.gather(meter.memory.read())), "processes": dist.world,
        "throughput": {
            "wall_seconds": round(wall, 4), "steps_timed": len(times),
            "median_step_seconds": round(statistics.median(times), 5) if times else None,
            "first_step_seconds": round(times[0], 5) if times else None,
            "step_seconds": [round(t, 5) for t in times], "step_tokens": meter.step_tokens,
            "tokens_per_second_after_first": after_first, "tokens_per_second": per_second(real),
            "padded_tokens_per_second": per_second(padded), "samples_per_second": per_second(rows),
            "real_tokens": real, "padded_tokens": padded, "samples": rows,
        },
    }
    if flops_per_token:
        info["throughput"]["flops_per_token"] = flops_per_token
        peak = measure.device_peak_tflops(device)
        tps = info["throughput"]["tokens_per_second"]
        info["throughput"]["mfu"] = round(tps * flops_per_token / (peak * 1e12), 5) if peak and tps else None
    return info
