"""Hydra submitit launchers that size each job's GPU request from the VRAM estimate.

`hydra/launcher=submitit_slurm` (or `submitit_local`) picks conf/hydra/launcher/*.yaml, which
point here (Hydra instantiates launchers only from the hydra_plugins namespace). Before submitting,
every run of the sweep is estimated with harness.vram; runs are grouped by the number of GPUs
they need (harness.pipeline.launcher.gpus_needed) and each group is submitted as a job array with that many
GPUs and one task per GPU. A job with several tasks runs data-parallel, see harness.pipeline.distributed.
"""
from __future__ import annotations

from typing import Sequence

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

from harness.pipeline.launcher import MAX_GPUS_PER_NODE, gpus_needed


class _VramSized:
    """Mixin over a submitit launcher: per-group GPU requests instead of one for the whole sweep."""

    def _run_config(self, overrides: Sequence[str]) -> dict:
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        return {k: OmegaConf.to_container(cfg[k], resolve=True) if OmegaConf.is_config(cfg[k]) else cfg[k]
                for k in cfg if k != "hydra"}

    def gpu_requests(self, job_overrides) -> list[int]:
        out = []
        for overrides in job_overrides:
            run = self._run_config(overrides)
            out.append(min(MAX_GPUS_PER_NODE, gpus_needed(run, run["cluster"]["gpu_memory_gib"])))
        return out

    def launch(self, job_overrides, initial_job_idx):
        needs = self.gpu_requests(job_overrides)
        results: list = [None] * len(job_overrides)
        base = dict(self.params)
        offset = 0
        for gpus in sorted(set(needs)):
            members = [i for i, n in enumerate(needs) if n == gpus]
            # the sizing the user asked for is news, not chatter: on the console with the sweep's lines
            print(f"{len(members)} run(s) need {gpus} GPU(s): one job array", flush=True)
            self.params = {**base, **self.resources(gpus)}
            try:
                group = super().launch([job_overrides[i] for i in members], initial_job_idx + offset)
            finally:
                self.params = base
            for i, ret in zip(members, group):
                results[i] = ret
            offset += len(members)
        return results

    def resources(self, gpus: int) -> dict:
        return {"gpus_per_node": gpus, "tasks_per_node": gpus}


class VramSlurmLauncher(_VramSized, SlurmLauncher):
    pass


class VramLocalLauncher(_VramSized, LocalLauncher):
    def resources(self, gpus: int) -> dict:
        import torch
        if not torch.cuda.is_available():  # a CPU machine: nothing to request, one task
            return {"gpus_per_node": None, "tasks_per_node": 1}
        return {"gpus_per_node": min(gpus, torch.cuda.device_count()), "tasks_per_node": 1}
