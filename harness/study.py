"""`python -m harness.study study=cpu-study [key=value ...]`: a method comparison as a protocol.

1. tune: for every method, a grid of learning rates around its recipe's (study.lr_grid multiplies
   method.lr), each run on the training set minus a fixed validation split (validation.size), with
   no test set read (eval.enabled=false, forgetting.enabled=false). harness.analysis.selection picks:
   the lowest final validation loss wins (validation accuracy breaks a tie); a diverged run never wins.
   A winner at an end of the grid extends it by the grid's own factor (one point beyond that end,
   only the new point run), again until the winner is interior or the next point would leave
   study.lr_cap (then the winner is flagged 'at the cap'). The tuning runs train at least half the
   final runs' optimizer steps (a shorter horizon rewards learning the answer format fast; refused
   unless study.short_horizon_reason says why). The selection states the validation set's size, the
   standard error of the criterion and whether the winner's margin over the runner-up is within
   noise (below harness.analysis.selection.NOISE_SES standard errors).
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
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from harness import methods
from harness.analysis import selection
from harness.config import CONF_DIR
from harness.errors import ConfigError, HarnessError
from harness.record import atomic
from harness.ui import console
from harness.ui.progress import RunProgress

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
    extend_grid: bool = True  # a winner at an end of the grid adds the next point beyond it (x the grid's factor)
    lr_cap: list = field(default_factory=lambda: [0.0625, 16.0])  # [min, max] x the recipe's rate the grid may reach
    # the tuning runs must train >= half the final runs' optimizer steps; a shorter horizon only with a
    # stated reason (recorded in selection.json)
    short_horizon_reason: str = ""


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
    if len(study.lr_cap) != 2 or not 0 < study.lr_cap[0] <= 1 <= study.lr_cap[1]:
        raise ConfigError(f"study.lr_cap: [min, max] multipliers of the recipe's rate with min <= 1 <= max, "
                          f"not {study.lr_cap}")
    outside = [x for x in study.lr_grid if not study.lr_cap[0] * (1 - 1e-9) <= x <= study.lr_cap[1] * (1 + 1e-9)]
    if outside:
        raise ConfigError(f"study.lr_grid: {outside} lie outside study.lr_cap {study.lr_cap}")
    if study.extend_grid:
        try:
            selection.grid_factor(study.lr_grid)
        except ValueError as exc:
            raise ConfigError(f"study.lr_grid (extend_grid=true): {exc}") from None
    return study


def run_config(study: StudyConfig, method: str, lr: float, stage: str, seed: int, extra: list[str],
               here: bool = True):
    """One run of the study, checked (`here=False`: for another machine, as harness.plan plans it)."""
    from harness.config.overrides import resolve_one
    stage_overrides = study.tune if stage == "tune" else study.final
    return resolve_one([*study.common, *stage_overrides, f"method={method}", f"method.lr={lr:.6g}", f"seed={seed}",
                        f"results_dir={study.results_dir}", f"+tags.study={study.name}", f"stage={stage}",
                        *extra], here=here)


def recipe_lr(study: StudyConfig, method: str) -> float:
    from harness.config.overrides import resolve_one
    return float(resolve_one([*study.common, f"method={method}"], here=False).method.lr)


def optimizer_steps(cfg) -> int:
    """A run's optimizer steps: train.max_steps, or its epochs over the training set minus the
    validation split (read only for an epoch-based run)."""
    if cfg.train.max_steps > 0:
        return int(cfg.train.max_steps)
    from harness import tasks
    from harness.pipeline.train import total_steps
    records, _ = tasks.load_train_set(tasks.get_family(cfg.task.name).train_set(cfg.task.train_set), cfg.cache_dir)
    n = max(0, len(records) - cfg.validation.size)
    return total_steps(cfg.train, min(n, cfg.train.limit) if cfg.train.limit else n)


def check(study: StudyConfig, extra: list[str]) -> dict:
    """Refuse a study whose tuning stage would read test sets, has no validation split or trains a
    shorter horizon than half the final runs (unless study.short_horizon_reason says why), before
    anything runs; returns the horizon of every method."""
    horizons, steps = {}, {}
    for method in study.methods:
        base = recipe_lr(study, method)
        tune_cfg = run_config(study, method, base, "tune", study.seeds[0], extra)
        if tune_cfg.eval.enabled or tune_cfg.forgetting.enabled:
            raise ConfigError("the tuning stage must not read test sets: its overrides must keep "
                              "eval.enabled=false and forgetting.enabled=false")
        if not tune_cfg.validation.size:
            raise ConfigError("the tuning stage selects on validation: set validation.size > 0 in study.common")
        final_cfg = run_config(study, method, base, "final", study.seeds[0], extra)
        for stage, cfg in (("tune", tune_cfg), ("final", final_cfg)):
            key = (stage, cfg.train.max_steps, cfg.train.epochs, cfg.train.batch_size, cfg.train.limit,
                   cfg.validation.size, cfg.task.name, cfg.task.train_set)
            if key not in steps:
                steps[key] = optimizer_steps(cfg)
            horizons.setdefault(method, {})[f"{stage}_steps"] = steps[key]
        h = horizons[method]
        h["ratio"] = round(h["tune_steps"] / h["final_steps"], 4) if h["final_steps"] else None
        h["min_ratio"] = selection.MIN_HORIZON
        if h["tune_steps"] < selection.MIN_HORIZON * h["final_steps"]:
            if not study.short_horizon_reason.strip():
                raise ConfigError(
                    f"study {study.name}: the tuning runs of {method} train {h['tune_steps']} optimizer steps, "
                    f"below half the final runs' {h['final_steps']}: so short a horizon rewards learning the "
                    f"answer format fast. Give study.tune train.max_steps >= "
                    f"{math.ceil(selection.MIN_HORIZON * h['final_steps'])}, or state why a shorter horizon "
                    f"is acceptable in study.short_horizon_reason (recorded in selection.json)")
            h["short_horizon_reason"] = study.short_horizon_reason.strip()
            log.warning("%s: tuning horizon %d of %d final steps, allowed: %s", method, h["tune_steps"],
                        h["final_steps"], h["short_horizon_reason"])
    return horizons


def tune(study: StudyConfig, extra: list[str], run, on_extend=None) -> dict:
    """Stage 1: every grid point of every method, the grid extended while its winner sits at an end
    (within study.lr_cap); returns the selection (no test set is read). `on_extend()` is called for
    every point the extension adds (the progress count)."""
    horizons = check(study, extra)
    factor = selection.grid_factor(study.lr_grid) if study.extend_grid else None
    chosen = {}
    for method in study.methods:
        base = recipe_lr(study, method)
        points, records = {}, {}

        def add(mult: float) -> None:
            lr = base * mult
            rec = run(run_config(study, method, lr, "tune", study.seeds[0], extra))
            points[mult], records[mult] = {**selection.grid_point(rec), "lr": lr, "multiplier": mult}, rec

        for mult in sorted(study.lr_grid):
            add(mult)
        added = []
        while True:
            grid = [points[m] for m in sorted(points)]
            best = selection.choose(grid)
            if best is None:
                raise HarnessError(f"study {study.name}: no learning rate of {method} trained to the end; see {grid}")
            nxt = selection.next_multiplier(list(points), best["multiplier"], factor, study.lr_cap) if factor else None
            if nxt is None:
                break
            # the optimum may lie beyond this end: one more point there; the others are not rerun
            log.info("%s: the best rate is the %s of the grid: adding x%g", method,
                     selection.grid_edge(grid, best), nxt)
            if on_extend:
                on_extend()
            add(nxt)
            added.append(nxt)
        edge = selection.grid_edge(grid, best)
        where = selection.position(list(points), best["multiplier"], factor, study.lr_cap)
        second = selection.runner_up(grid)
        noise = selection.noise(best, second, records[best["multiplier"]],
                                records[second["multiplier"]] if second else None)
        chosen[method] = {
            "recipe_lr": base, "chosen_lr": best["lr"], "chosen_multiplier": best["multiplier"], "grid": grid,
            "grid_edge": edge, "position": where, "at_cap": where == "at the cap",
            "extension": {"enabled": study.extend_grid, "factor": factor, "cap": list(study.lr_cap), "added": added},
            "horizon": horizons[method],
            "validation": {"items": best["validation_items"], "label_tokens": best["validation_tokens"],
                           "loss": best["validation_loss"], "loss_se": best["validation_se"],
                           "se_from": best["se_from"]},
            **noise, "noise_rule": f"within noise: margin over the runner-up < {selection.NOISE_SES:g} standard errors",
            "chosen_by": selection.RULE}
        log.info("%s: learning rate %.3g chosen (recipe %.3g, x%g), %s%s; validation loss %s +- %s (%s items)",
                 method, best["lr"], base, best["multiplier"], where,
                 "" if where == "interior" else f" ({edge} rate): the optimum may lie beyond it",
                 best["validation_loss"], best["validation_se"], best["validation_items"])
        if noise["within_noise"]:
            log.warning("%s: the winner beats the runner-up (lr %.3g) by %.4g, within %g standard errors (%.4g)",
                        method, noise["runner_up_lr"], noise["margin"], selection.NOISE_SES, noise["margin_se"])
    return chosen


def protocol(study: StudyConfig) -> dict:
    """The rules the selection followed, stated in selection.json."""
    return {"rule": selection.RULE,
            "grid_extension": (f"a winner at an end of the grid adds the next point beyond it (x the grid's factor) "
                               f"until the winner is interior or the next point would leave the cap {study.lr_cap} "
                               f"(x the recipe's rate)") if study.extend_grid else "off: the grid is as given",
            "tuning_horizon": f"tuning runs train >= {selection.MIN_HORIZON:g} x the final runs' optimizer steps"
                              + (f"; shorter allowed: {study.short_horizon_reason}" if study.short_horizon_reason else ""),
            "noise": f"the validation loss's standard error over examples; within noise: the winner's margin over "
                     f"the runner-up < {selection.NOISE_SES:g} standard errors (paired over the same examples when "
                     f"the records hold per-example losses)"}


def final(study: StudyConfig, chosen: dict, extra: list[str], run) -> list[dict]:
    out = []
    for method in study.methods:
        lr = chosen[method]["chosen_lr"]
        for seed in study.seeds:
            rec = run(run_config(study, method, lr, "final", seed, [f"+tags.chosen_lr={lr:.6g}", *extra]))
            out.append({"method": method, "seed": seed, "lr": lr, "run_id": rec.run_id, "status": rec.status})
    return out


def main(argv: list[str] | None = None) -> int:
    from harness.pipeline import runner
    argv = sys.argv[1:] if argv is None else list(argv)
    p = argparse.ArgumentParser(prog="python -m harness.study", description=__doc__.split("\n")[0])
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="study=<preset>, study.<key>=... (the protocol), other keys for every run")
    p.add_argument("-v", "--verbose", action="store_true", help="every run's INFO logs and library bars on the console")
    args = p.parse_args(argv)
    console.setup(args.verbose, announce=(log.name,))
    names = [o.split("=", 1)[1] for o in args.overrides if o.startswith("study=")]
    extra = [o for o in args.overrides if not o.startswith("study")]
    try:
        study = load(names[-1] if names else "cpu-study", args.overrides)
        # the runs known so far: the grid extension adds to them
        progress = RunProgress(len(study.methods) * (len(study.lr_grid) + len(study.seeds)))
        started = time.perf_counter()

        def run(cfg):
            log.info("%s %s lr=%.3g seed=%d (%s)", progress.start(), cfg.method.name, cfg.method.lr, cfg.seed,
                     cfg.stage)
            rec, reused = runner.run_or_reuse(cfg)
            progress.finish(reused)
            return rec

        out_dir = Path(study.results_dir)

        def write_selection(**more) -> None:  # after tuning, then again with the final runs
            atomic.write_json(out_dir / "selection.json", {
                "study": OmegaConf.to_container(OmegaConf.structured(study)), "protocol": protocol(study),
                "selection": chosen, **more})

        chosen = tune(study, extra, run, on_extend=progress.grow)
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
