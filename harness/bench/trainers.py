"""The baselines are the library objects users run, not re-implementations of them:

- reference: `transformers.Trainer` with LLM-Adapters' finetune.py settings: examples tokenised
  without padding, `DataCollatorForSeq2Seq(padding=True, pad_to_multiple_of=8)` with left padding
  (their tokenizer.padding_side), `group_by_length=False` (transformers 5:
  train_sampling_strategy="random"), AdamW (`adamw_torch`), linear warmup and decay, fp16 on a GPU
  as they run it, fp32 on a CPU;
- trainer_tuned: the same with every flag a careful user sets on this hardware: length grouping,
  bf16 autocast where it is fast (GPUs; CPUs with AMX or AVX512-BF16), fused AdamW on a GPU, and
  right padding (LLM-Adapters' left padding makes each padded row's first token a target);
- trl_padding_free: TRL's `SFTTrainer` with `padding_free=True` and the tuned flags (every micro-batch one packed row,
  position ids restarting per example; transformers turns those into a block-diagonal mask for
  sdpa/eager, flash-attention's varlen kernels on a GPU, so examples do not attend to each other).

Each loop gets the same examples (already tokenised by the harness, labels included), the same
effective batch, number of optimizer steps and learning-rate schedule (the harness's warmup, capped
at a tenth of a short run, is passed as warmup_steps). Step times come from a callback at every
optimizer step (device synchronised); tokens from a forward pre-hook, so a data loader reading
ahead does not shift them between steps. Losses are Trainer's logged per-step losses.
"""
from __future__ import annotations

import tempfile

import torch
from datasets import Dataset

from harness.pipeline import measure


class StepClock:
    """Per-step seconds and real tokens, from a forward pre-hook and Trainer's step callbacks."""

    def __init__(self, model, device: torch.device):
        self.device, self.step_seconds, self.step_tokens, self._tokens = device, [], [], 0
        self._last = None
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        if module.training:  # evaluation passes are not training tokens
            mask = kwargs.get("attention_mask")
            ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]
            self._tokens += int(mask.sum()) if mask is not None else int(ids.numel())

    def callback(self):
        from transformers import TrainerCallback
        clock = self

        class _Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                clock._last = measure.clock(clock.device)

            def on_step_end(self, args, state, control, **kwargs):
                now = measure.clock(clock.device)
                clock.step_seconds.append(now - clock._last)
                clock.step_tokens.append(clock._tokens)
                clock._last, clock._tokens = now, 0
        return _Clock()


def _dataset(examples: list[dict], completion_mask: bool = False) -> Dataset:
    rows = []
    for e in examples:
        row = {"input_ids": e["input_ids"], "attention_mask": [1] * len(e["input_ids"]), "labels": e["labels"]}
        if completion_mask:  # TRL: train on what the harness's labels keep (train.train_on_inputs=false)
            row = {"input_ids": e["input_ids"], "completion_mask": [int(x != -100) for x in e["labels"]]}
        rows.append(row)
    return Dataset.from_list(rows)


def _arguments(cls, cfg, steps: int, warmup: int, device: torch.device, tuned: bool, out: str, **extra):
    from harness.pipeline.models import fast_bf16
    t = cfg.train
    gpu = device.type == "cuda"
    return cls(output_dir=out, per_device_train_batch_size=t.micro_batch_size,
               gradient_accumulation_steps=t.batch_size // t.micro_batch_size, max_steps=steps,
               learning_rate=cfg.method.lr, warmup_steps=warmup, lr_scheduler_type="linear",
               weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
               optim="adamw_torch_fused" if gpu and tuned else "adamw_torch",
               fp16=gpu and not tuned, bf16=tuned and fast_bf16(device), logging_steps=1, save_strategy="no",
               # a NaN loss must show as NaN (Trainer's default filter logs 0.0-like averages instead)
               logging_nan_inf_filter=False,
               report_to="none", disable_tqdm=True, seed=cfg.seed, data_seed=cfg.seed, dataloader_num_workers=0,
               use_cpu=not gpu, **extra)


def method_hooks(model, cfg):
    """What the method owns beyond its layers, for the library loops too: its optimizer (LoRA+),
    and a callback running its per-step hook (AdaLoRA's rank budget). Without them a baseline row
    would train another method."""
    from transformers import TrainerCallback

    from harness import methods
    spec = methods.get(cfg.method.name)
    optimizer = spec.optimizer(model, cfg.method.lr, cfg.train.weight_decay, cfg.method) if spec.optimizer else None
    callbacks = []
    if spec.after_step is not None:
        class _AfterStep(TrainerCallback):
            def on_optimizer_step(self, args, state, control, **kwargs):
                spec.after_step(model, state.global_step + 1)
        callbacks.append(_AfterStep())
    return optimizer, callbacks


def _quiet(trainer):
    """Trainer prints its log dicts on stdout when tqdm is off: the bench's own lines say more."""
    from transformers import PrinterCallback
    trainer.remove_callback(PrinterCallback)
    return trainer


def _result(trainer, clock: StepClock) -> dict:
    clock.handle.remove()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    args = trainer.args
    precision = "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"  # what the row ran
    return {"steps": trainer.state.global_step, "losses": [round(x, 5) for x in losses],
            "step_seconds": clock.step_seconds, "step_tokens": clock.step_tokens, "precision": precision}


def trainer_loop(model, tok, examples, cfg, steps, device, warmup, tuned: bool = False) -> dict:
    """transformers.Trainer as LLM-Adapters runs it (tuned: group_by_length, bf16 where fast, fused AdamW on a GPU)."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments
    # LLM-Adapters' finetune.py sets left padding (for batched inference) and trains so: every padded
    # row's first real token then becomes a target predicted from a padding position (the loss counts
    # it), which raises the loss ~3% here and can turn it NaN where a padding query attends to nothing.
    # A careful user trains with right padding.
    tok.padding_side = "right" if tuned else "left"
    collator = DataCollatorForSeq2Seq(tok, pad_to_multiple_of=8, return_tensors="pt", padding=True)
    clock = StepClock(model, device)
    with tempfile.TemporaryDirectory() as out:
        # LLM-Adapters' group_by_length flag is train_sampling_strategy in transformers 5
        args = _arguments(TrainingArguments, cfg, steps, warmup, device, tuned, out, remove_unused_columns=False,
                          train_sampling_strategy="group_by_length" if tuned else "random")
        optimizer, hooks = method_hooks(model, cfg)
        trainer = _quiet(Trainer(model=model, args=args, train_dataset=_dataset(examples), data_collator=collator,
                                 callbacks=[clock.callback(), *hooks], optimizers=(optimizer, None)))
        trainer.train()
    return _result(trainer, clock)


def trl_loop(model, tok, examples, cfg, steps, device, warmup) -> dict:
    """TRL's SFTTrainer, padding-free (one packed row per micro-batch), on the harness's token ids."""
    from trl import SFTConfig, SFTTrainer
    train_on_inputs = all(e["labels"] == e["input_ids"] for e in examples)
    clock = StepClock(model, device)
    with tempfile.TemporaryDirectory() as out:
        args = _arguments(SFTConfig, cfg, steps, warmup, device, True, out, padding_free=True, packing=False,
                          max_length=None, completion_only_loss=not train_on_inputs, dataset_num_proc=None)
        optimizer, hooks = method_hooks(model, cfg)
        trainer = _quiet(SFTTrainer(model=model, args=args, processing_class=tok,
                                    train_dataset=_dataset(examples, completion_mask=not train_on_inputs),
                                    callbacks=[clock.callback(), *hooks], optimizers=(optimizer, None)))
        trainer.train()
    return _result(trainer, clock)
