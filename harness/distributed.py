"""Several processes for one run, through `accelerate launch` (DDP, or FSDP on GPUs).

Each optimizer step's micro-batches are dealt out to the ranks; the loss is normalised by the
step's token count summed over all ranks, so the update equals the single-process one. Only rank 0
evaluates and writes (records, predictions, checkpoints, W&B); memory is reported per rank and max.
A single process (the usual case) uses the same code with a trivial `Dist`.
"""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    accelerator: Any = None
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.accelerator is not None and "FSDP" in str(self.accelerator.distributed_type)

    @property
    def device(self) -> torch.device | None:
        """The device accelerate assigned to this rank (None for a single process)."""
        return None if self.accelerator is None else torch.device(self.accelerator.device)

    def prepare(self, model, optimizer):
        if self.accelerator is None:
            return model, optimizer
        return self.accelerator.prepare(model, optimizer)

    def backward(self, loss) -> None:
        if self.accelerator is None:
            loss.backward()
        else:
            self.accelerator.backward(loss)

    def no_sync(self, model, last: bool):
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if self.accelerator is None or last:
            return nullcontext()
        return self.accelerator.no_sync(model)

    def clip(self, params, max_norm: float):
        if self.accelerator is None:
            return torch.nn.utils.clip_grad_norm_(params, max_norm)
        return self.accelerator.clip_grad_norm_(params, max_norm)

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.accelerator.device)
        torch.distributed.all_reduce(t)
        return float(t.item())

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.accelerator.wait_for_everyone()

    def unwrap(self, model):
        return model if self.accelerator is None else self.accelerator.unwrap_model(model)


_DIST: Dist | None = None


def _from_slurm_tasks() -> bool:
    """A submitit SLURM job with several tasks (harness.launcher asks for one per GPU): export the
    torch.distributed variables accelerate reads."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return False
    import submitit
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def setup(method: str = "") -> Dist:
    """The process group of this run: accelerate's when launched with several processes
    (`accelerate launch`, or a multi-task SLURM job; there, full fine-tuning is sharded with FSDP)."""
    global _DIST
    if _DIST is None:
        slurm = _from_slurm_tasks()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import Accelerator
            kwargs = {}
            if slurm and method == "full":
                from accelerate import FullyShardedDataParallelPlugin
                kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(fsdp_version=2, reshard_after_forward=True,
                                                                      auto_wrap_policy="transformer_based_wrap")
            # without cpu=True accelerate ignores the process group on a machine without CUDA
            acc = Accelerator(cpu=not torch.cuda.is_available(), **kwargs)
            _DIST = Dist(accelerator=acc, rank=acc.process_index, world=acc.num_processes)
        else:
            _DIST = Dist()
    return _DIST


def merge_memory(per_rank: list[dict]) -> dict:
    """Per-rank peak memory dicts -> the max of each figure plus the per-rank list."""
    if len(per_rank) == 1:
        return per_rank[0]
    keys = {k for d in per_rank for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {**{k: max(d.get(k) or 0 for d in per_rank) for k in sorted(keys)}, "per_rank": per_rank,
            "aggregate": "max over ranks"}
