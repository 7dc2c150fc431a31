"""Hydra-style overrides -> the resolved run config dict the runner would use (no run is started)."""
from __future__ import annotations

from omegaconf import OmegaConf

from harness.config.overrides import resolve_one


def compose_run_config(overrides: list[str]) -> dict:
    """The checked config of `overrides` (e.g. ["model=llama-7b", "train.cutoff_len=512"]), checked as
    every entry point checks it, except for what depends on this machine: the estimate is for a GPU."""
    return OmegaConf.to_container(resolve_one(overrides, here=False), resolve=True)
