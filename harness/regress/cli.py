"""`python -m harness.regress`: does the code in front of us still produce its baseline?

    python -m harness.regress [--baseline results/baselines/default] [overrides ...]
        runs the baseline's sweep (the overrides it was saved with, or the ones given) with this
        code into results/regress/<code id>/ and compares; exit 1 on a regression
    python -m harness.regress --current results [--baseline ...]
        compares records that exist already (no run)
    python -m harness.regress --save NAME [--current DIR] [overrides ...]   (default: sweep=default)
        runs the sweep with this code (or takes the records it made in DIR) and stores it as
        results/baselines/NAME (records, predictions, baseline.json: the overrides, the records' code
        identity); with `study=<preset>` the overrides name a study (harness.study), rerun as one
    python -m harness.regress --publish wandb:<entity>/<project>/<group> [--baseline DIR]
        logs a baseline's records as the runs of a W&B group (offline without a key: wandb sync later);
        --baseline wandb:<entity>/<project>/<group> then compares against it

Exit status: 0 pass, 1 a regression (a FAIL row, or a baseline run missing or not ok in the fresh
sweep), 2 bad input. Tolerances: harness.regress.compare.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.record import atomic, env
from harness.regress.compare import compare, markdown, verdict
from harness.regress.sources import (BASELINES, BadInput, baseline_overrides, load_side,
                                     publish_wandb, run_sweep, save_baseline)

DEFAULT_BASELINE = str(BASELINES / "default")


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {text}")
    return value


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m harness.regress", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="the sweep to run (default: the one the baseline was saved with)")
    p.add_argument("--baseline", default=DEFAULT_BASELINE,
                   help="a records directory (e.g. results/baselines/default) or wandb:<entity>/<project>/<group>")
    p.add_argument("--current", help="compare this results directory instead of running the sweep")
    p.add_argument("--save", metavar="NAME", help="run the sweep with this code and store it as a named baseline")
    p.add_argument("--publish", metavar="wandb:E/P/G", help="log the --baseline directory's records to a W&B group")
    p.add_argument("--workdir", default="results/regress", help="where fresh sweeps go: <workdir>/<code id>/")
    p.add_argument("--cache-dir", default="results/cache", help="model and data cache shared by the sweeps")
    p.add_argument("--z", type=_non_negative, default=3.0,
                   help="accuracy: standard errors a drop may reach (default 3); the paired test uses the "
                        "two-sided level they stand for, 2*(1-Phi(z)): 0.27%% for 3")
    p.add_argument("--acc-drop", type=_non_negative, default=0.0,
                   help="accuracy: a drop never fails below this many points (default 0)")
    p.add_argument("--loss-rtol", type=_non_negative, default=1e-3,
                   help="training loss: allowed relative difference at any step (default 1e-3)")
    p.add_argument("--vram-growth", type=_non_negative, default=0.10,
                   help="peak train memory growth allowed, relative (default 0.10)")
    p.add_argument("--tps-drop", type=_non_negative, default=0.20,
                   help="train tokens/s drop allowed, relative (default 0.20)")
    p.add_argument("--allow-missing", action="store_true",
                   help="a baseline run missing from current does not fail (default: it does)")
    return p.parse_intermixed_args(argv)


def fresh_sweep(args, overrides: list[str]) -> Path:
    """Run `overrides` with this code; a rerun with the same code reuses what it recorded."""
    out = Path(args.workdir) / env.code_identity()["code_id"]
    run_sweep(overrides, out, args.cache_dir)
    return out


def check(args) -> int:
    if args.current:
        current = args.current
    else:
        overrides = args.overrides or (None if args.baseline.startswith("wandb:") else baseline_overrides(args.baseline))
        if not overrides:
            raise BadInput(f"which sweep? {args.baseline} has no {'baseline.json' if not args.baseline.startswith('wandb:') else 'sweep overrides'}: "
                           f"give its overrides (e.g. sweep=default) or --current <results dir>")
        load_side(args.baseline, "baseline")  # a bad baseline fails before a sweep is run
        current = str(fresh_sweep(args, overrides))
    baseline_rows, current_rows = load_side(args.baseline, "baseline"), load_side(current, "current")
    rows = compare(baseline_rows, current_rows, z=args.z, acc_drop=args.acc_drop, loss_rtol=args.loss_rtol,
                   vram_growth=args.vram_growth, tps_drop=args.tps_drop)
    table = markdown(rows)
    counts = {k: sum(r["result"] == k for r in rows) for k in ("PASS", "FAIL", "SKIP", "MISSING", "NEW")}
    code = verdict(rows, require_all=not args.allow_missing)
    line = (f"regress: {len(rows)} comparisons of {current} against {args.baseline}: "
            + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" -> {'FAIL' if code else 'PASS'}")
    print(table + "\n\n" + line)
    if not args.current:
        atomic.write_text(Path(current) / "regress.md", table + "\n\n" + line + "\n")
    return code


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.publish:
            if not args.publish.startswith("wandb:"):
                raise BadInput(f"--publish {args.publish}: expected wandb:<entity>/<project>/<group>")
            dirs = publish_wandb(args.publish[len("wandb:"):], Path(args.baseline))
            print(f"published {len(dirs)} runs of {args.baseline} to {args.publish}")
            return 0
        if args.save:
            overrides = args.overrides or ["sweep=default"]
            target = Path(args.save) if "/" in args.save else BASELINES / args.save
            # --current: records this code already made with these overrides (e.g. a fresh clone's make sweep)
            source = Path(args.current) if args.current else fresh_sweep(args, overrides)
            code = save_baseline(target, source, overrides)["code"]
            print(f"baseline {target}: the records of `{' '.join(overrides)}` made by code "
                  f"{code.get('code_id') or code.get('mixed')}")
            return 0
        return check(args)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
