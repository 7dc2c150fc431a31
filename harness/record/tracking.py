"""Weights & Biases tracking: offline unless the user has a key; wandb.enabled=false disables.

Each run logs its resolved config (secrets redacted by harness.config.secrets), per-step
loss/throughput/memory, final metrics and a predictions table, grouped by sweep and tagged with
model/method/task/git sha. An unreachable W&B server never costs the run: after a bounded wait the
run is tracked offline, with one warning saying how to sync it later.
"""
from __future__ import annotations

import contextlib
import logging
import netrc
import os
import sys
from urllib.parse import urlparse

from harness.config import secrets
from harness.record import env

log = logging.getLogger("harness.record.tracking")
# wandb's own default is 90 s: a sweep of many runs against a dead server would lose that much per
# run. A reachable server answers in a few seconds. wandb 0.31 spends up to ~10 s more (two 5 s
# account look-ups, not configurable) before this timeout starts, so a dead server costs ~25 s.
INIT_TIMEOUT_S = 15.0
# WANDB_MODE values wandb understands, as the mode this module acts on (`dryrun` is wandb's old
# name for offline, `run` for online).
ENV_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline",
             "disabled": "disabled"}


def _netrc_key(host: str) -> bool:
    try:
        return bool(netrc.netrc(os.environ.get("NETRC") or None).authenticators(host))
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(requested) -> str:
    """The W&B mode for config value `requested`, by precedence: an explicit config mode
    (online/offline/...), then WANDB_MODE (the user's per-shell choice must beat a key stored once
    in ~/.netrc or the environment), then online if a key is configured, else offline."""
    requested = str(getattr(requested, "value", requested))  # config enums are str-valued
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ENV_MODES:
        return ENV_MODES[env_mode]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    # `wandb login` stores the key in ~/.netrc under the server's host (not only api.wandb.ai)
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    return "online" if _netrc_key(host) else "offline"


@contextlib.contextmanager
def _argv_redacted():
    """wandb stores sys.argv[1:] in the run's metadata (Settings._args, read during wandb.init, with
    no setting to override it), so a `+wandb.api_key=...` override would be uploaded: show wandb
    the redacted command line while it starts."""
    saved = sys.argv
    sys.argv = saved[:1] + secrets.redact_argv(saved[1:])
    try:
        yield
    finally:
        sys.argv = saved


class NullTracker:
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
            self.run.summary.update(summary_of(rec))
            rows = [[name, r["index"], r.get("response"), str(r["pred"]), r["gold"], r["correct"]]
                    for name, rs in predictions.items() for r in rs]
            if rows:
                self.run.log({"predictions": wandb.Table(
                    columns=["set", "index", "response", "pred", "gold", "correct"], data=rows)})
        self.run.finish(exit_code=0 if rec is not None and rec.ok else 1)


def summary_of(rec) -> dict:
    """A record (harness.record.schema.Record) as W&B summary keys; harness.regress reads a baseline
    back from exactly these."""
    flat = {"status": rec.status, "run_id": rec.run_id}
    for name, m in rec.eval.items():
        flat.update({f"eval/{name}/{k}": getattr(m, k) for k in ("accuracy", "parse_failure_rate", "n")
                     if getattr(m, k) is not None})
    flat.update({f"summary/{k}": v for k, v in numbers(rec.summary).items()})
    flat.update({f"throughput/{k}": v for k, v in numbers(rec.throughput).items()})
    if rec.train_info and rec.train_info.losses:
        flat["train/losses"] = rec.train_info.losses
    for phase, m in rec.memory.items():
        flat.update({f"memory/{phase}/{k}": v for k, v in numbers(m).items()})
    if rec.forgetting:
        flat["forgetting/avg"] = rec.forgetting.forgetting_avg
    meta = rec.meta_info.model_dump()
    flat.update({f"meta/{k}": meta[k] for k in ("device_type", "device_name", "cpu", "cpu_count") if meta.get(k)})
    if rec.code_id:
        flat["meta/code_id"] = rec.code_id
    return flat


def numbers(section) -> dict:
    """The numeric fields of a record section (none when the section is absent)."""
    fields = section.model_dump(exclude_none=True) if section is not None else {}
    return {k: v for k, v in fields.items() if isinstance(v, (int, float))}


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


def _init(wandb, **kwargs):
    with _argv_redacted():
        return wandb.init(**kwargs)


def start(cfg, run_id: str, resolved: dict, init_timeout: float | None = None):
    """A tracker for one run: NullTracker when disabled, else a WandbTracker. Online that cannot
    reach the server within `init_timeout` seconds (default: WANDB_INIT_TIMEOUT if the user set it,
    else INIT_TIMEOUT_S) falls back to offline with one warning, so a run never fails or stalls for
    tracking."""
    if init_timeout is None:
        init_timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or INIT_TIMEOUT_S)
    w = cfg.wandb
    if not w.enabled:
        return NullTracker()
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed; tracking disabled")
        return NullTracker()
    mode = resolve_mode(w.mode)
    if mode == "disabled":  # no run directory, no wandb service process for nothing
        log.info("W&B disabled (wandb.mode / WANDB_MODE=disabled)")
        return NullTracker()
    git = env.git_state()
    os.makedirs(w.dir, exist_ok=True)
    kwargs = dict(project=w.project, group=w.group or sweep_group(), name=run_id, dir=w.dir,
                  config=secrets.redact(resolved), job_type=str(cfg.task.name), reinit="finish_previous",
                  tags=[str(cfg.model.name), str(cfg.method.name), str(cfg.task.name),
                        f"git:{(git['git_sha'] or 'none')[:8]}"],
                  # silent: no banner and summary per run on the console (a sweep prints one line per run)
                  settings=wandb.Settings(init_timeout=init_timeout, silent=True))
    failure = None
    if mode == "online":
        try:
            return WandbTracker(_init(wandb, mode="online", **kwargs))
        except (wandb.errors.Error, OSError) as exc:
            # wandb 0.31 raises CommError when the server does not answer within init_timeout
            # (AuthenticationError, a CommError, for a rejected key; UsageError for no key at all)
            failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        mode = "offline"
    run = _init(wandb, mode=mode, **kwargs)
    log.info("W&B run %s (%s): %s", run_id, mode, os.path.dirname(run.dir))
    if failure:
        log.warning("W&B online start failed (%s); run %s is tracked offline instead, sync it later with "
                    "`wandb sync %s`", failure, run_id, os.path.dirname(run.dir))
    return WandbTracker(run)
