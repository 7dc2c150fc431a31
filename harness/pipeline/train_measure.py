"""What the harness measures while transformers.Trainer trains, as Trainer callbacks.

- `StepMeter`: each optimizer step's loss (the token-normalised objective, summed over the step's
  micro-batches and, with several processes, over ranks), seconds (device synchronised) and real
  / padded tokens and rows; NaN or infinite loss stops the run (`Diverged`). Validation and
  checkpoint saving happen between steps and are excluded from training time.
- peak memory over the training phase (reset when training starts), per process.

Loss and token counts are accumulated as tensors where the forward runs (no device
synchronisation per micro-batch) and read once per step, when the clock synchronises anyway.
"""
from __future__ import annotations

import logging
import math

import torch
from tqdm.auto import tqdm
from transformers import TrainerCallback

from harness.errors import Diverged
from harness.pipeline import measure

log = logging.getLogger("harness.pipeline.train")


class StepMeter(TrainerCallback):
    """Per-step losses, times and tokens of one training phase; `on_log(step, metrics)` (W&B) and the
    log line every `log_every` steps; `validate(step)` (the validation loss) every `validate_every`
    steps and at the end."""

    def __init__(self, device: torch.device, dist, total_steps: int, start_step: int, losses: list[float],
                 samples: int, log_every: int, on_log=None, validate=None, validate_every: int = 0):
        self.device, self.dist, self.total = device, dist, total_steps
        self.losses, self.samples_before = list(losses), samples
        self.log_every, self.report, self.validate, self.validate_every = log_every, on_log, validate, validate_every
        self.step_seconds: list[float] = []
        self.step_tokens: list[int] = []
        self.validation_loss: list[dict] = []
        self.excluded_seconds = 0.0  # validation and checkpoints: not training time
        self.totals = {"real": 0, "padded": 0, "rows": 0}
        self._acc = None  # this step's loss, real tokens, padded tokens, rows (tensors on the device)
        self.memory = measure.PhaseMemory(device)
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                        leave=False, disable=None if dist.main else True)
        self._last = None

    # --- called by the harness's Trainer for every micro-batch -------------------------------------
    def add_forward(self, loss: torch.Tensor, inputs: dict) -> None:
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask")
        real = mask.sum() if mask is not None else torch.tensor(ids.numel(), device=ids.device)
        position = inputs.get("position_ids")
        rows = (position == 0).sum() if mask is None and position is not None else torch.tensor(
            ids.shape[0], device=ids.device)
        values = torch.stack([loss.detach().float(), real.float(), torch.tensor(float(ids.numel()), device=ids.device),
                              rows.float()])
        self._acc = values if self._acc is None else self._acc + values

    # --- Trainer callbacks --------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        self.memory.start()
        self._last = measure.clock(self.device)

    def on_step_end(self, args, state, control, **kwargs):
        now = measure.clock(self.device)
        acc = self._acc.tolist() if self._acc is not None else [0.0, 0, 0, 0]
        self._acc = None
        # with several processes each rank's loss is its share x world size (Trainer's scaling for
        # DDP's averaged gradients): the mean over ranks is the step's loss
        loss = self.dist.sum(acc[0]) / self.dist.world
        step = state.global_step
        if not math.isfinite(loss):  # on the all-ranks loss, so every rank stops together
            raise Diverged(step, loss)
        self.step_seconds.append(now - self._last)
        self.step_tokens.append(int(acc[1]))
        for key, value in zip(("real", "padded", "rows"), acc[1:]):
            self.totals[key] += int(value)
        self.losses.append(loss)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        if self.validate is not None and ((self.validate_every and step % self.validate_every == 0)
                                          or step == self.total):
            self.validation_loss.append({"step": step, "loss": self.validate(step)})
            if self.report:
                self.report(step, {"val/loss": self.validation_loss[-1]["loss"]})
        if step % self.log_every == 0 or step == self.total:
            log.info("step %d/%d  loss %.4f  %.0f tok/s", step, self.total, loss,
                     sum(self.step_tokens) / max(1e-9, sum(self.step_seconds)))
        self._last = now
        self._restart_clock()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.report and logs and "loss" in logs and self.losses:
            self.report(state.global_step, {
                "train/loss": self.losses[-1], "train/lr": logs.get("learning_rate"),
                "train/grad_norm": logs.get("grad_norm"), "train/step_seconds": self.step_seconds[-1],
                **{f"train/{k}": v for k, v in self.memory.read().items()}})
        self._restart_clock()

    def on_save(self, args, state, control, **kwargs):
        self._restart_clock()

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()

    def _restart_clock(self) -> None:
        """What ran since the clock last stopped (validation, logging, a checkpoint) is not
        training: left out of every step's time."""
        now = measure.clock(self.device)
        self.excluded_seconds += now - self._last
        self._last = now

    def steps_so_far(self) -> dict:
        """What a checkpoint keeps beside Trainer's state (harness.pipeline.train_state)."""
        return {"losses": self.losses, "samples": self.samples_before + self.dist.sum(self.totals["rows"])}
