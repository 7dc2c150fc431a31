"""python -m harness method=lora model=smollm2-135m task=arithmetic [key=value ...] [-m for sweeps]

Exit status: 0 every run ended ok; 1 a run (or a run of the sweep) ended failed / oom / diverged /
predicted_oom; 2 bad input (nothing was loaded or written).
"""
from __future__ import annotations

import os
import sys
from datetime import datetime, timezone

import hydra

from harness.errors import HarnessError

# Hydra's own informational flags (--help, --cfg job, --info, ...) go to Hydra untouched
MULTIRUN_FLAGS = ("-m", "--multirun")


def bad_input(exc: HarnessError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def preflight(argv: list[str]) -> tuple[list, list[str]]:
    """Check every run this command line describes (harness.config.overrides) before Hydra starts any;
    return their checked configs and the argv to hand to Hydra (no configs for Hydra's own flags)."""
    if any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in argv):
        return [], argv
    from harness.config.overrides import resolve
    multirun = any(a in MULTIRUN_FLAGS for a in argv)
    try:
        cfgs, overrides, multirun = resolve([a for a in argv if a not in MULTIRUN_FLAGS], multirun)
    except HarnessError as exc:
        bad_input(exc)
    return cfgs, (["--multirun"] if multirun else []) + overrides


def exit_status(cfgs: list, started: str) -> int:
    """1 when a run of this command did not end ok, read from the runs' records (the launcher may have
    run them in other processes); a run that left no record of its own did not end ok either."""
    if int(os.environ.get("RANK", "0")) != 0:  # several processes: rank 0 writes the records and judges
        return 0
    from harness.pipeline import runner
    outcomes = [(cfg, runner.outcome(cfg, started)) for cfg in cfgs]
    failed = [rec.run_id if rec else f"{cfg.model.name} x {cfg.method.name} x {cfg.task.name} (no record)"
              for cfg, rec in outcomes if rec is None or not rec.ok]
    if failed:
        print(f"{len(failed)} run(s) did not end ok: {', '.join(sorted(failed))}", file=sys.stderr)
    return 1 if failed else 0


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> dict:
    from harness.pipeline import runner
    from harness.ui import console
    console.show_info(cfg.verbose)
    try:
        rec, reused = runner.run_or_reuse(cfg)
    except HarnessError as exc:  # bad input found only once the data is read: nothing was written
        bad_input(exc)
    # what the sweep summary shows for this run
    return {"run_id": rec.run_id, "status": rec.status, "error": rec.error,
            "avg": rec.summary.avg_evaluated if rec.summary else None, "skipped": reused}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from harness.config import register_configs
    register_configs()
    started = datetime.now(timezone.utc).isoformat()
    runs, sys.argv[1:] = preflight(sys.argv[1:])
    main()
    raise SystemExit(exit_status(runs, started))
