"""Weights & Biases tracking: offline unless the user has a key; wandb.enabled=false disables.

Each run logs its resolved config (secrets scrubbed), per-step loss/throughput/memory, final
metrics and a predictions table, grouped by sweep and tagged with model/method/task/git sha.
"""
from __future__ import annotations

import logging
import os
import re

from harness import env

log = logging.getLogger("harness.tracking")
SECRET = re.compile(r"(token|api_?key|secret|password|passwd|auth)", re.I)


def scrub(obj):
    """Drop values under secret-looking keys, recursively: no key ever reaches W&B or a record."""
    if isinstance(obj, dict):
        return {k: ("<redacted>" if SECRET.search(str(k)) else scrub(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v) for v in obj]
    return obj


def resolve_mode(requested: str) -> str:
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_MODE") == "online":
        return "online"
    try:
        import netrc
        auth = netrc.netrc().authenticators("api.wandb.ai")
        return "online" if auth else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class NullTracker:
    run = None

    def log(self, step: int, metrics: dict) -> None:
        pass

    def finish(self, rec, predictions) -> None:
        pass


class WandbTracker:
    def __init__(self, run):
        self.run = run

    def log(self, step: int, metrics: dict) -> None:
        self.run.log({k: v for k, v in metrics.items() if v is not None}, step=step)

    def finish(self, rec, predictions) -> None:
        import wandb
        if rec is not None:
            flat = {"status": rec["status"]}
            for name, m in (rec.get("eval") or {}).items():
                flat[f"eval/{name}/accuracy"] = m["accuracy"]
                flat[f"eval/{name}/parse_failure_rate"] = m["parse_failure_rate"]
            for k, v in (rec.get("summary") or {}).items():
                if isinstance(v, (int, float)):
                    flat[f"summary/{k}"] = v
            t = (rec.get("train_info") or {}).get("throughput", {})
            flat.update({f"throughput/{k}": v for k, v in t.items() if isinstance(v, (int, float))})
            for phase, m in (rec.get("memory") or {}).items():
                flat.update({f"memory/{phase}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
            if rec.get("forgetting"):
                flat["forgetting/avg"] = rec["forgetting"]["forgetting_avg"]
            self.run.summary.update(flat)
            rows = [[name, r["index"], r.get("response"), str(r["pred"]), r["gold"], r["correct"]]
                    for name, rs in predictions.items() for r in rs]
            if rows:
                self.run.log({"predictions": wandb.Table(
                    columns=["set", "index", "response", "pred", "gold", "correct"], data=rows)})
        self.run.finish(exit_code=0 if rec and rec["status"] == "ok" else 1)


def sweep_group() -> str | None:
    """Runs of one Hydra multirun share a W&B group named after the sweep's directory."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            return "sweep-" + os.path.basename(os.path.normpath(HydraConfig.get().sweep.dir))
    except Exception:  # outside Hydra (tests, the benchmark): no group
        pass
    return None


def start(cfg, run_id: str, resolved: dict):
    w = cfg.wandb
    if not w.enabled:
        return NullTracker()
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; tracking disabled")
        return NullTracker()
    git = env.git_state()
    os.makedirs(w.dir, exist_ok=True)
    run = wandb.init(project=w.project, group=w.group or sweep_group(), name=run_id, dir=w.dir, mode=resolve_mode(w.mode),
                     config=scrub(resolved), job_type=cfg.task.name, reinit="finish_previous",
                     tags=[cfg.model.name, cfg.method.name, cfg.task.name, f"git:{(git['git_sha'] or 'none')[:8]}"])
    return WandbTracker(run)
