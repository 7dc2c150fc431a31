"""Hydra-style overrides -> the resolved run config dict the runner would use (no run is started)."""
from __future__ import annotations

from omegaconf import OmegaConf

from harness.config import compose


def compose_run_config(overrides: list[str]) -> dict:
    """Compose conf/config.yaml with `overrides` (e.g. ["model=llama-7b", "train.cutoff_len=512"])."""
    return OmegaConf.to_container(compose(overrides), resolve=True)
