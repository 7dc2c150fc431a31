"""Several processes for one run, through `accelerate launch` (DDP, or FSDP on GPUs).

transformers.Trainer does the data-parallel work itself (it reads the process group that
`accelerate launch` or torchrun set up): each optimizer step's examples are dealt out to the ranks
and the loss is normalised by the step's label-token count summed over all ranks
(`average_tokens_across_devices`), so the update equals the single-process one (tested). What the
harness needs beside it is here: which rank this is, sums and gathers of measurements, barriers.
Only rank 0 evaluates and writes (records, predictions, checkpoints, W&B); memory is reported per
rank and max. A single process (the usual case) uses the same code with a trivial `Dist`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Dist:
    state: Any = None  # accelerate's PartialState when there are several processes
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """Full fine-tuning sharded over the processes (accelerate's FSDP config, read by Trainer)."""
        return self.world > 1 and os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true")

    @property
    def device(self) -> torch.device | None:
        """The device accelerate assigned to this rank (None for a single process)."""
        return None if self.state is None else torch.device(self.state.device)

    def sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.state.device)
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
            self.state.wait_for_everyone()


_DIST: Dist | None = None


def _from_slurm_tasks() -> bool:
    """A submitit SLURM job with several tasks (harness.pipeline.launcher asks for one per GPU): export the
    torch.distributed variables accelerate reads."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return False
    import submitit
    submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return True


def setup(method: str = "") -> Dist:
    """The process group of this run: accelerate's when launched with several processes
    (`accelerate launch`, or a multi-task SLURM job; there, full fine-tuning is sharded with FSDP,
    configured through the variables `accelerate launch --config_file conf/accelerate/fsdp.yaml` sets)."""
    global _DIST
    if _DIST is None:
        slurm = _from_slurm_tasks()
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState
            if slurm and method == "full":
                os.environ.update(ACCELERATE_USE_FSDP="true", FSDP_VERSION="2", FSDP_RESHARD_AFTER_FORWARD="true",
                                  FSDP_AUTO_WRAP_POLICY="TRANSFORMER_BASED_WRAP", FSDP_STATE_DICT_TYPE="FULL_STATE_DICT")
            # without cpu=True accelerate ignores the process group on a machine without CUDA
            state = PartialState(cpu=not torch.cuda.is_available())
            _DIST = Dist(state=state, rank=state.process_index, world=state.num_processes)
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
