"""`python -m harness.study study=cpu-study [key=value ...]`: a method comparison as a protocol.

1. tune: for every method, a grid of learning rates around its recipe's (study.lr_grid multiplies
   method.lr), each run on the training set minus a fixed validation split (train.val_size), with
   no test set read (eval.enabled=false, forgetting.enabled=false). harness.selection picks:
   the lowest final validation loss wins (validation accuracy breaks a tie); a diverged run never wins.
2. final: every method at its chosen learning rate, once per seed of study.seeds, evaluated on the
   test sets (with every scoring the study asks for).

Each run is an ordinary record in the study's results directory, so a study is resumable (a
complete record made by this code is reused) and `python -m harness.report --results <dir>`
tables it: per-method accuracy with intervals, the chosen learning rates, significance against
the reference method. The selection, with every grid point, is written to <dir>/selection.json
and into each final run's config (tags.study). Presets: conf/study/*.yaml (StudyConfig below).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from harness import atomic, methods, selection
from harness.config import CONF_DIR
from harness.errors import ConfigError, HarnessError

log = logging.getLogger("harness.study")


@dataclass
class StudyConfig:
    name: str = "study"
    methods: list = field(default_factory=lambda: ["lora"])
    lr_grid: list = field(default_factory=lambda: [0.25, 0.5, 1.0, 2.0, 4.0])  # x the recipe's method.lr
    seeds: list = field(default_factory=lambda: [1, 2, 3])
    common: list = field(default_factory=list)  # overrides of every run (model, task, batch, val split...)
    tune: list = field(default_factory=list)  # overrides of the grid runs (their length, ...)
    final: list = field(default_factory=list)  # overrides of the final runs (steps, eval limit, scorings...)
    results_dir: str = "results/studies/${name}"
    reference: str = "lora"  # the method differences are tested against in the report


def load(name: str, overrides: list[str]) -> StudyConfig:
    path = CONF_DIR / "study" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (CONF_DIR / "study").glob("*.yaml"))
        raise ConfigError(f"unknown study '{name}'; choose study= one of {', '.join(known)}")
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(StudyConfig), OmegaConf.load(path),
                              OmegaConf.from_dotlist([o[len("study."):] for o in overrides if o.startswith("study.")]))
        study = OmegaConf.to_object(cfg)
    except Exception as exc:  # an unknown key or a bad value: OmegaConf names it
        raise ConfigError(f"study {name}: {str(exc).splitlines()[0]}") from None
    known = methods.all_methods()
    bad = [m for m in study.methods if m not in known or not known[m].trains]
    if bad:
        raise ConfigError(f"study.methods: {bad} are not methods that train; choose from "
                          f"{', '.join(n for n, s in known.items() if s.trains)}")
    if not study.lr_grid or any(x <= 0 for x in study.lr_grid) or not study.seeds:
        raise ConfigError("study.lr_grid needs positive multipliers and study.seeds at least one seed")
    return study


def run_config(study: StudyConfig, method: str, lr: float, stage: str, seed: int, extra: list[str]):
    from harness.overrides import resolve_one
    stage_overrides = study.tune if stage == "tune" else study.final
    return resolve_one([*study.common, *stage_overrides, f"method={method}", f"method.lr={lr:.6g}", f"seed={seed}",
                        f"results_dir={study.results_dir}", f"+tags.study={study.name}", f"+tags.stage={stage}",
                        *extra])


def recipe_lr(study: StudyConfig, method: str) -> float:
    from harness.overrides import resolve_one
    return float(resolve_one([*study.common, f"method={method}"], here=False).method.lr)


def tune(study: StudyConfig, extra: list[str], run) -> dict:
    """Stage 1: every grid point of every method; returns the selection (no test set is read)."""
    chosen = {}
    for method in study.methods:
        base = recipe_lr(study, method)
        grid = []
        for mult in study.lr_grid:
            lr = base * mult
            cfg = run_config(study, method, lr, "tune", study.seeds[0], extra)
            if cfg.eval.enabled or cfg.forgetting.enabled:
                raise ConfigError("the tuning stage must not read test sets: its overrides must keep "
                                  "eval.enabled=false and forgetting.enabled=false")
            if not cfg.train.val_size:
                raise ConfigError("the tuning stage selects on validation: set train.val_size > 0 in study.common")
            rec = run(cfg)
            grid.append({**selection.grid_point(rec), "lr": lr, "multiplier": mult})
        best = selection.choose(grid)
        if best is None:
            raise HarnessError(f"study {study.name}: no learning rate of {method} trained to the end; see {grid}")
        # a winner at the end of the grid says the optimum may lie beyond it: flagged, not hidden
        edge = selection.grid_edge(grid, best)
        chosen[method] = {"recipe_lr": base, "chosen_lr": best["lr"], "grid": grid, "grid_edge": edge,
                          "chosen_by": selection.RULE}
        log.info("%s: learning rate %.3g chosen (recipe %.3g)%s", method, best["lr"], base,
                 f"; the {edge} rate of the grid: a wider grid may do better" if edge else "")
    return chosen


def final(study: StudyConfig, chosen: dict, extra: list[str], run) -> list[dict]:
    out = []
    for method in study.methods:
        lr = chosen[method]["chosen_lr"]
        for seed in study.seeds:
            rec = run(run_config(study, method, lr, "final", seed, [f"+tags.chosen_lr={lr:.6g}", *extra]))
            out.append({"method": method, "seed": seed, "lr": lr, "run_id": rec["run_id"], "status": rec["status"]})
    return out


def main(argv: list[str] | None = None) -> int:
    from harness import runner
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m harness.study", description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="study=<preset>, study.<key>=... (the protocol), other keys for every run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    names = [o.split("=", 1)[1] for o in args.overrides if o.startswith("study=")]
    extra = [o for o in args.overrides if not o.startswith("study")]
    try:
        study = load(names[-1] if names else "cpu-study", args.overrides)
        total = len(study.methods) * (len(study.lr_grid) + len(study.seeds))
        done, ran, started = [0], [0, 0.0], time.perf_counter()  # ran: runs that trained, their seconds

        def run(cfg):
            done[0] += 1
            # the rate of runs that trained: a resumed study's reused records take no time
            eta = f", ~{ran[1] / ran[0] * (total - done[0] + 1) / 60:.0f} min left" if ran[0] else ""
            log.info("[%d/%d] %s lr=%.3g seed=%d (%s)%s", done[0], total, cfg.method.name, cfg.method.lr, cfg.seed,
                     cfg.tags.get("stage"), eta)
            t0 = time.perf_counter()
            rec = runner.run(cfg)
            if not rec.get("_skipped"):
                ran[0], ran[1] = ran[0] + 1, ran[1] + time.perf_counter() - t0
            return rec

        out_dir = Path(study.results_dir)

        def write_selection(**more) -> None:  # after tuning, then again with the final runs
            atomic.write_json(out_dir / "selection.json", {
                "study": OmegaConf.to_container(OmegaConf.structured(study)), "selection": chosen, **more})

        chosen = tune(study, extra, run)
        write_selection()
        runs = final(study, chosen, extra, run)
        write_selection(final_runs=runs, minutes=round((time.perf_counter() - started) / 60, 1))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = [r for r in runs if r["status"] != "ok"]
    print(f"study {study.name}: {len(runs)} final runs in {out_dir}, {len(failed)} not ok; tables: "
          f"python -m harness.report --results {out_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
