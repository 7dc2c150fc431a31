"""python -m harness method=lora model=smollm2-135m task=arithmetic [key=value ...] [-m for sweeps]

Exit status: 0 every run ended ok; 1 a run (or a run of the sweep) ended failed / oom / diverged /
predicted_oom; 2 bad input (nothing was loaded or written).
"""
from __future__ import annotations

import os
import sys

import hydra

from harness.errors import HarnessError

# Hydra's own informational flags (--help, --cfg job, --info, ...) go to Hydra untouched
MULTIRUN_FLAGS = ("-m", "--multirun")
OUTCOME: dict = {"not_ok": []}


def bad_input(exc: HarnessError) -> None:
    print(f"error: {exc}", file=sys.stderr)
    raise SystemExit(2)


def preflight(argv: list[str]) -> list[str]:
    """Check every run this command line describes (harness.overrides) before Hydra starts any;
    return the argv to hand to Hydra."""
    if any(a.startswith("-") and a not in MULTIRUN_FLAGS for a in argv):
        return argv
    from harness.overrides import resolve
    multirun = any(a in MULTIRUN_FLAGS for a in argv)
    try:
        _, overrides, multirun = resolve([a for a in argv if a not in MULTIRUN_FLAGS], multirun)
    except HarnessError as exc:
        bad_input(exc)
    return (["--multirun"] if multirun else []) + overrides


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> dict:
    from harness import console, runner
    console.show_info(cfg.verbose)
    try:
        rec, reused = runner.run_or_reuse(cfg)
    except HarnessError as exc:  # bad input found only once the data is read: nothing was written
        bad_input(exc)
    if not rec.ok:
        OUTCOME["not_ok"].append(rec.run_id)
    # what the sweep summary shows for this run
    return {"run_id": rec.run_id, "status": rec.status, "error": rec.error,
            "avg": rec.summary.avg_evaluated if rec.summary else None, "skipped": reused}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from harness import sweep_progress
    from harness.config import register_configs
    register_configs()
    sys.argv[1:] = preflight(sys.argv[1:])
    main()
    failed = OUTCOME["not_ok"] + sweep_progress.NOT_OK
    if failed:
        print(f"{len(set(failed))} run(s) did not end ok: {', '.join(sorted(set(failed)))}", file=sys.stderr)
        raise SystemExit(1)
