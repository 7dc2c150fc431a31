"""Resumable training through transformers.Trainer's own checkpoints.

A run saves Trainer checkpoints (weights that train, optimizer, scheduler, RNG states, trainer
state) under results/train_state/<run-id>/checkpoint-<step>, every `resume.every_steps` optimizer
steps and/or every `resume.every_minutes`, keeping only the newest. A run killed (kill -9) and
rerun resumes from it with `Trainer.train(resume_from_checkpoint=...)`: Trainer restores the RNG
states and skips the batches already seen, so the loss curve equals the uninterrupted one (tested).

What Trainer does not keep, the harness adds beside it:
- `harness_steps.json` in each checkpoint: the per-step losses and examples seen so far (the
  record holds every step's loss; Trainer's log history holds only logged steps);
- `complete` in each checkpoint, written after Trainer finished saving it: a kill during a save
  leaves a checkpoint without it, which is ignored;
- `fingerprint.json` in the run's directory: what must match for its checkpoints to belong to
  this run (step budget, data size, batch layout, trainable shapes, code identity). A checkpoint
  written by other code or another number of processes is discarded with a warning.
"""
from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from harness.record import atomic

log = logging.getLogger("harness.pipeline.train")
STEPS, COMPLETE, FINGERPRINT = "harness_steps.json", "complete", "fingerprint.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def fingerprint(model, total_steps: int, examples: int, accumulation: int) -> dict:
    """What must match for a checkpoint to belong to this run (the directory is keyed by the run id
    already; this catches one written by other code or another number of processes)."""
    from harness.record.env import code_identity
    return {"total_steps": total_steps, "examples": examples, "accumulation": accumulation,
            "trainable": {n: list(p.shape) for n, p in model.named_parameters() if p.requires_grad},
            "code_id": code_identity()["code_id"]}


class Checkpoints:
    """The run's checkpoint directory. `directory=None` or both intervals 0 disables checkpoints
    (the benchmark, FSDP's sharded parameters); only the main process writes."""

    def __init__(self, directory: Path | None, every_steps: int = 0, every_minutes: float = 0.0, main: bool = True):
        self.directory = Path(directory) if directory is not None else None
        self.enabled = self.directory is not None and bool(every_steps or every_minutes)
        self.every_steps, self.every_seconds, self.main = every_steps, every_minutes * 60, main

    def latest(self, expected: dict) -> tuple[Path | None, dict]:
        """(the newest complete checkpoint of this run or None, its harness step record)."""
        if not self.enabled or not self.directory.is_dir():
            return None, {"losses": [], "samples": 0}
        found = self.directory / FINGERPRINT
        if not found.is_file() or json.loads(found.read_text()) != expected:
            log.warning("ignoring the training checkpoints in %s: they were written for a different run",
                        self.directory)
            self.clear()
            return None, {"losses": [], "samples": 0}
        done = sorted((int(m.group(1)), p) for p in self.directory.iterdir()
                      if (m := _CHECKPOINT.match(p.name)) and (p / COMPLETE).is_file())
        if not done:
            return None, {"losses": [], "samples": 0}
        path = done[-1][1]
        log.info("resuming from the checkpoint at step %d (%s)", done[-1][0], path)
        return path, json.loads((path / STEPS).read_text())

    def start(self, expected: dict) -> None:
        """Claim the directory for this run (its fingerprint), before the first checkpoint."""
        if self.enabled and self.main:
            self.directory.mkdir(parents=True, exist_ok=True)
            atomic.write_json(self.directory / FINGERPRINT, expected)

    def clear(self) -> None:
        """Forget the checkpoints (the run is recorded, or resume.restart=true starts over)."""
        if self.directory is not None and self.main:
            shutil.rmtree(self.directory, ignore_errors=True)

    def callback(self, steps_so_far, agree=bool) -> TrainerCallback:
        """Asks Trainer for a checkpoint when one is due by time (Trainer's save_steps covers
        steps), never after the last step (the run is about to be recorded), and completes each
        checkpoint Trainer saved with the harness's step record. `steps_so_far()` gives that record;
        `agree(flag)` makes every process take the same time-based decision (clocks differ)."""
        return _CheckpointCallback(self, steps_so_far, agree)


class _CheckpointCallback(TrainerCallback):
    def __init__(self, checkpoints: Checkpoints, steps_so_far, agree):
        self.checkpoints, self.steps_so_far, self.agree = checkpoints, steps_so_far, agree
        self.saved = 0
        self._last = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        c = self.checkpoints
        if not c.enabled:
            control.should_save = False
        elif state.global_step >= state.max_steps:
            control.should_save = False  # the record is written next; a final checkpoint has no use
        elif c.every_seconds and self.agree(time.monotonic() - self._last >= c.every_seconds):
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kwargs):
        self._last = time.monotonic()
        self.saved += 1
        record = self.steps_so_far()  # on every process: it may sum over them
        if not self.checkpoints.main:
            return
        path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        atomic.write_json(path / STEPS, record)
        (path / COMPLETE).write_text("")


BEST = "best_weights.safetensors"


class BestWeights:
    """validation.keep_best: the weights that train, at the lowest validation loss seen so far, to end
    training with (what LLM-Adapters gets from Trainer's load_best_model_at_end). Kept in host memory
    and, when the run keeps snapshots, in a file beside them, so a run killed and resumed still ends
    with the best weights of the steps before the kill. Trainer's own mechanism is not used: it
    selects by its evaluation loop's batch-averaged loss (ours is the token-mean the study selects
    on), writes a whole checkpoint at every evaluation, and fails to reload prompt-learning adapters
    (peft issue 2256)."""

    def __init__(self, model, directory: Path | None):
        self.model = model
        self.path = Path(directory) / BEST if directory is not None else None
        self.step, self.loss, self.weights = None, float("inf"), None
        if self.path is not None and self.path.is_file():  # a resumed run: the best before the kill
            from safetensors import safe_open
            with safe_open(str(self.path), "pt") as f:
                meta = f.metadata()
                self.weights = {k: f.get_tensor(k) for k in f.keys()}
            self.step, self.loss = int(meta["step"]), float(meta["loss"])
            log.info("keep_best: the best validation loss so far is %.5f at step %d", self.loss, self.step)

    def _trainable(self):
        return {n: p for n, p in self.model.named_parameters() if p.requires_grad}

    def offer(self, step: int, loss: float) -> None:
        """The validation loss after `step`: the weights now are kept when it is the lowest yet."""
        if not loss < self.loss:
            return
        self.step, self.loss = step, loss
        self.weights = {n: p.detach().to("cpu", copy=True) for n, p in self._trainable().items()}
        if self.path is not None:
            from safetensors.torch import save
            data = save({k: v.contiguous() for k, v in self.weights.items()},
                        metadata={"step": str(step), "loss": repr(loss)})
            atomic.write_bytes(self.path, data)

    def restore(self, last_step: int) -> dict:
        """Put the best weights back into the model; what the record says about them."""
        if self.weights is None:
            return {"kept_step": None}
        if self.step != last_step:
            params = self._trainable()
            missing = sorted(set(self.weights) ^ set(params))
            if missing:
                raise RuntimeError(f"keep_best: the kept weights do not match the model's ({missing[:3]})")
            with torch.no_grad():
                for name, value in self.weights.items():
                    params[name].copy_(value.to(params[name].device, params[name].dtype))
        return {"kept_step": self.step, "kept_loss": round(self.loss, 6), "last_step": last_step}
