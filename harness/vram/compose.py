"""Hydra-style overrides -> the resolved run config dict the runner would use (no run is started)."""
from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose_run_config(overrides: list[str]) -> dict:
    """Compose conf/config.yaml with `overrides` (e.g. ["model=llama-7b", "train.cutoff_len=512"])."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config import register_configs

    register_configs()
    if GlobalHydra.instance().is_initialized():  # e.g. called from inside a Hydra app
        GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
        return OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"bad override in {' '.join(overrides) or '(none)'}: {msg}") from exc
