"""python -m harness.vram [overrides ...] | --table | --validate

    python -m harness.vram model=llama-7b method=qlora4 train.micro_batch_size=4 train.cutoff_len=512
    python -m harness.vram model=llama-13b method=lora --device-memory-gib 24 --optim paged_adamw8bit
    python -m harness.vram --table [--json]
    python -m harness.vram --validate [--results results] [--strict]

Overrides are the runner's (Hydra syntax, composed from conf/). Bad input: one line on stderr,
exit 2. --validate --strict exits 1 when an estimate misses a measured peak by more than 10%.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness.errors import ConfigError, HarnessError
from harness.vram.inputs import OPTIMIZERS


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m harness.vram", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[2:]))
    p.add_argument("overrides", nargs="*", help="run config overrides, e.g. model=llama-7b method=qlora4")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--table", action="store_true", help="full/LoRA/QLoRA-8/QLoRA-4 x 7B..110B vs a reference table")
    mode.add_argument("--validate", action="store_true", help="compare with measured CUDA records")
    p.add_argument("--results", default="results", help="results directory for --validate (default: results)")
    p.add_argument("--strict", action="store_true", help="--validate: exit 1 if any |error| > 10%%")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--optim", default="adamw", choices=OPTIMIZERS, help="optimizer to assume (default: adamw)")
    p.add_argument("--device-memory-gib", type=float, default=None, metavar="GIB",
                   help="GPU memory to check the estimate against (e.g. 24, 40, 80)")
    return p


def _dump(obj) -> str:
    return json.dumps(obj, indent=1, default=str)


def run(args) -> int:
    if args.table:
        from harness.vram.table import format_table, table_rows
        rows = table_rows(args.optim, args.overrides)
        print(_dump(rows) if args.json else format_table(rows, args.optim))
        return 0
    if args.validate:
        from harness.vram.validate import NO_RECORDS, failures, format_validation, validate
        runs = Path(args.results) / "runs"
        rows = validate(Path(args.results))
        if args.json:
            print(_dump({"runs_dir": str(runs), "records": rows,
                         "message": None if rows else NO_RECORDS.format(runs=runs)}))
        else:
            print(format_validation(rows, runs))
        return 1 if args.strict and failures(rows) else 0
    if args.device_memory_gib is not None and args.device_memory_gib <= 0:
        raise ConfigError(f"--device-memory-gib must be positive, not {args.device_memory_gib}")
    from harness.vram.compose import compose_run_config
    from harness.vram.estimate import as_dict, estimate
    from harness.vram.report import format_estimate
    cfg = compose_run_config(args.overrides)
    d = as_dict(estimate(cfg, args.optim), args.device_memory_gib)
    print(_dump(d) if args.json else format_estimate(d))
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except HarnessError as exc:  # bad input: one message naming the fix, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
