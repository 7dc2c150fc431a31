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
