"""Training-state snapshots: a run killed mid-training resumes at its last snapshot and ends with
the weights and losses an uninterrupted run would have had (exactly, in a single fp32 process).

A snapshot holds the trainable parameters (safetensors), the optimizer, scheduler and RNG states and
the loss history, in results/train_state/<run-id>/, swapped in as a whole directory (a kill leaves the
previous snapshot or none). Micro-batch order is a function of (seed, epoch), so a resumed run skips
the steps already taken and sees the same batches. Optimizer states are read back with
torch.load(weights_only=True): tensors and plain containers, never code.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import torch

from harness import atomic

log = logging.getLogger("harness.train")
PARAMS, STATES, META = "trainable.safetensors", "states.pt", "snapshot.json"


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def fingerprint(model, total_steps: int, examples: int, accumulation: int) -> dict:
    """What must match for a snapshot to belong to this run (the directory is keyed by the run id
    already; this catches a snapshot written by other code or another number of processes)."""
    from harness.env import code_identity
    return {"total_steps": total_steps, "examples": examples, "accumulation": accumulation,
            "trainable": {n: list(p.shape) for n, p in trainable(model).items()},
            "code_id": code_identity()["code_id"]}


class Snapshots:
    """Save every `every_steps` optimizer steps and/or every `every_minutes`; only the main process
    writes. `directory=None` disables snapshots (the benchmark, FSDP's sharded parameters)."""

    def __init__(self, directory: Path | None, every_steps: int = 0, every_minutes: float = 0.0, main: bool = True):
        self.directory = directory
        self.enabled = directory is not None and bool(every_steps or every_minutes)
        self.every_steps, self.every_seconds, self.main = every_steps, every_minutes * 60, main
        self.saved = 0
        self._last = time.monotonic()

    def load(self, model, opt, sched, expected: dict) -> tuple[int, list[float], int]:
        """Restore the last snapshot into model/optimizer/scheduler/RNG: (steps done, their losses,
        examples seen). (0, [], 0) when there is none or it does not fit this run."""
        self._last = time.monotonic()
        meta_path = self.directory / META if self.enabled else None
        if meta_path is None or not meta_path.is_file():
            return 0, [], 0
        meta = json.loads(meta_path.read_text())
        if meta.get("fingerprint") != expected:
            log.warning("ignoring the training snapshot in %s: it was written for a different run", self.directory)
            return 0, [], 0
        from safetensors.torch import load_file
        tensors = load_file(str(self.directory / PARAMS))
        states = torch.load(self.directory / STATES, weights_only=True)
        with torch.no_grad():
            for name, p in trainable(model).items():
                p.copy_(tensors[name].to(p.device, p.dtype))
        opt.load_state_dict(states["optimizer"])
        sched.load_state_dict(states["scheduler"])
        torch.set_rng_state(states["rng_cpu"])
        if states.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["rng_cuda"])
        log.info("resuming from the snapshot at step %d (%s)", meta["step"], self.directory)
        return meta["step"], list(meta["losses"]), int(meta["samples"])

    def due(self, step: int) -> bool:
        if not self.enabled:
            return False
        return bool((self.every_steps and step % self.every_steps == 0)
                    or (self.every_seconds and time.monotonic() - self._last >= self.every_seconds))

    def save(self, step: int, model, opt, sched, losses: list[float], samples: int, expected: dict) -> None:
        self._last = time.monotonic()
        self.saved += 1
        if not self.main:
            return
        from safetensors.torch import save_file

        def fill(tmp: str) -> None:
            save_file({n: p.detach().contiguous().cpu() for n, p in trainable(model).items()}, f"{tmp}/{PARAMS}")
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng_cpu": torch.get_rng_state(),
                        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                       f"{tmp}/{STATES}")
            Path(tmp, META).write_text(json.dumps({"step": step, "losses": losses, "samples": int(samples),
                                                   "fingerprint": expected}))

        atomic.replace_dir(self.directory, fill)

    def clear(self) -> None:
        """Forget the snapshot (the run is recorded, or force=true starts over)."""
        if self.directory is not None and self.main:
            shutil.rmtree(self.directory, ignore_errors=True)
