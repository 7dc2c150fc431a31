"""One run, top to bottom: checked config -> data -> the recipe's steps (harness.pipeline.recipe: model ->
method -> train -> evaluate -> retention) -> record.

Bad input raises a HarnessError before anything is written. Once work starts, the outcome is
always a record: status ok, or diverged / oom / failed with the error, written atomically last.
"""
from __future__ import annotations

import logging
import time
import traceback
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import torch
from omegaconf import OmegaConf

from harness import data, methods, record, tasks
from harness.config import checks, secrets
from harness.errors import ConfigError, Diverged, HarnessError
from harness.pipeline import heldout, measure, models
from harness.pipeline.distributed import Dist, setup as dist_setup
from harness.pipeline.recipe import Recipe
from harness.pipeline.train_state import Checkpoints
from harness.record import atomic, env, tracking

log = logging.getLogger("harness")


class Plan:
    """Everything resolved and validated before any model is loaded."""

    def __init__(self, cfg):
        # `cfg` passed the front door (harness.config.overrides.resolve: every entry point composes and checks
        # its runs there, all of them before the first starts); what needs the launched processes,
        # the data or the loaded model is checked once each is known (run_or_reuse, load_data, Recipe)
        self.cfg = cfg
        self.resolved = OmegaConf.to_container(cfg, resolve=True)
        self.run_id = record.run_id(self.resolved, models.resolve_device(cfg.device).type)
        self.paths = record.RunPaths(Path(cfg.results_dir), self.run_id)
        self.family = tasks.get_family(cfg.task.name)
        self.method = methods.get(cfg.method.name)
        self.trains = self.method.trains
        self.test_sets = [self.family.test_set(n) for n in cfg.task.test_sets]
        self.train_set = self.family.train_set(cfg.task.train_set)
        self.warnings: list[str] = []

    def warn(self, message: str) -> None:
        """A warning the user must see: in the log now and in the record."""
        log.warning(message)
        self.warnings.append(message)


class Loaded(NamedTuple):
    tests: dict  # name -> (TestSet, records, provenance); empty with eval.enabled=false
    train: list[dict]
    validation: list[dict]  # held out of the training set (harness.pipeline.heldout)
    provenance: list[dict]
    validation_info: dict


def load_data(plan: Plan) -> Loaded:
    """Test sets (limited), training and validation examples, and provenance of everything read.
    With eval.enabled=false no test set is read at all (a learning-rate grid must not see them)."""
    c = plan.cfg
    tests = {}
    for ts in plan.test_sets if c.eval.enabled else []:
        records, meta = tasks.load_test_set(ts, c.cache_dir, c.eval.hellaswag)
        tests[ts.name] = (ts, tasks.select(records, c.eval.limit), meta)
    train_records, provenance, val_records, val_info = [], [], [], {"items": 0}
    if plan.trains:
        train_records, provenance = tasks.load_train_set(plan.train_set, c.cache_dir)
        train_records, val_records, val_info = heldout.split(train_records, c.validation.size)
        if not train_records:  # every loop over the training data would end at once, or never
            raise ConfigError(f"validation.size={c.validation.size} holds out all {len(val_records)} records of "
                              f"{plan.train_set.name}: none is left to train on; set validation.size below "
                              f"{len(val_records)}")
        ds = data.to_dataset(train_records).shuffle(seed=c.seed)
        available = min(len(ds), c.train.limit) if c.train.limit else len(ds)
        keep = available
        if c.train.max_steps:  # a capped run sees at most max_steps x batch_size examples: tokenise only those
            keep = min(keep, c.train.max_steps * c.train.batch_size)
        train_records = ds.select(range(keep)).to_list()
        check_training_length(plan, available)
    return Loaded(tests, train_records, val_records, provenance, val_info)


# LLM-Adapters trains 3 epochs; far more than this is almost surely a mistake in train.max_steps
MANY_EPOCHS = 20


def check_training_length(plan: Plan, examples: int) -> None:
    """Warn (log and record) about a training set smaller than one batch, and about a run whose
    max_steps would make it absurdly long compared with its data."""
    t = plan.cfg.train
    if examples < t.batch_size:
        plan.warn(f"the training set has {examples} example(s), fewer than one batch (train.batch_size="
                  f"{t.batch_size}): every optimizer step repeats the same examples")
    if t.max_steps and examples and t.max_steps * t.batch_size / examples > MANY_EPOCHS:
        epochs = t.max_steps * t.batch_size / examples
        plan.warn(f"train.max_steps={t.max_steps} x train.batch_size={t.batch_size} is {epochs:,.0f} passes over "
                  f"the {examples} training examples (LLM-Adapters trains 3 epochs); check train.max_steps")


def vram_estimate(plan: Plan, device: torch.device) -> dict | None:
    """The estimator's prediction for this run on this GPU (None on CPU or when it cannot tell)."""
    if not plan.cfg.vram_check or device.type != "cuda":
        return None
    from harness.vram import predict_peak_gib
    total = torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
    try:
        est = predict_peak_gib(plan.resolved, total)
    except HarnessError as exc:
        log.warning("no VRAM estimate for this run: %s", exc)
        return None
    return {"device_memory_gib": round(total, 3), **{k: est[k] for k in (
        "predicted_peak_gib", "predicted_total_gib", "fits", "breakdown")}}


def summary(plan: Plan, evals: dict) -> dict:
    accs = {k: v["accuracy"] for k, v in evals.items()}
    overlap = [k for k in accs if evals[k]["overlaps_training_data"]]
    return {**tasks.averages(plan.family, accs, overlap), "overlapping_sets": overlap,
            "approximate_sets": [k for k, v in evals.items() if v["approximate"]]}


def reusable_record(plan: Plan) -> record.Record | None:
    """The complete record of this run, if this code made it (or reuse=any)."""
    rec = record.read_record(plan.paths.record)
    if rec is None or rec.status not in record.TERMINAL:
        return None
    if rec.status == "predicted_oom" and not plan.cfg.vram_check:  # asked to run it anyway
        return None
    made_by, here = rec.code_id, env.code_identity()["code_id"]
    if plan.cfg.reuse == "any" or made_by == here:
        log.info("skip %s: complete record made by %s (force=true reruns)", plan.run_id,
                 "this code" if made_by == here else f"code {made_by}")
        return rec
    log.info("rerun %s: its record was made by other code (code id %s; this is %s); reuse=any would keep it",
             plan.run_id, made_by, here)
    return None


def outcome(cfg, since: str) -> record.Record | None:
    """The record this run left when run at or after `since` (ISO time): the one it wrote (on this
    machine's device type or, launched elsewhere, another's), else the complete record it reused;
    None when it left none (killed, or refused)."""
    plan = Plan(cfg)
    for device_type in ("cuda", "cpu"):
        rec = record.read_record(plan.paths.results_dir / "runs" / f"{record.run_id(plan.resolved, device_type)}.json")
        if rec is not None and rec.finished >= since:
            return rec
    return None if cfg.force else reusable_record(plan)


@contextmanager
def run_log(path: Path | None):
    """Everything logged at INFO during a run (and Python's warnings, libraries' included) goes to the
    run's own log file; the console shows warnings only (conf/hydra/job_logging/harness.yaml). The
    file is opened at the first line and removed when the run is refused as bad input."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root, warnings_log = logging.getLogger(), logging.getLogger("py.warnings")
    logging.captureWarnings(True)  # warnings.warn now logs to py.warnings
    propagate = warnings_log.propagate
    warnings_log.propagate = False  # library deprecation chatter: to the file, not the console
    root.addHandler(handler)
    warnings_log.addHandler(handler)
    try:
        yield
    except HarnessError:
        handler.close()
        path.unlink(missing_ok=True)
        raise
    finally:
        root.removeHandler(handler)
        warnings_log.removeHandler(handler)
        warnings_log.propagate = propagate
        logging.captureWarnings(False)
        handler.close()


def run(cfg) -> record.Record:
    """Run one configuration (or reuse its complete record); return its record."""
    return run_or_reuse(cfg)[0]


def run_or_reuse(cfg) -> tuple[record.Record, bool]:
    """(the run's record, whether it was reused: a complete record this code made, nothing run).
    With several processes every rank runs this; only rank 0 writes."""
    plan = Plan(cfg)
    c = cfg
    done = None if c.force else reusable_record(plan)
    if done is not None:
        return done, True
    dist = dist_setup(c.method.name)
    checks.check_processes(c, dist.world, dist.fsdp)
    device = dist.device or models.resolve_device(c.device)
    loaded = load_data(plan)  # bad data stops here, before anything is started or written
    if dist.main:
        record.check_writable(plan.paths.results_dir)
    with run_log(plan.paths.log if dist.main else None):
        for warning in plan.warnings:  # warned while reading the data, before the run's log file opened
            log.info("warned before the run started: %s", warning)
        return run_loaded(plan, loaded, dist, device), False


def run_loaded(plan: Plan, loaded: Loaded, dist: Dist, device: torch.device) -> record.Record:
    """The run once its data is read: estimate, train and evaluate, write the record."""
    cfg = c = plan.cfg
    rec = {"schema": record.SCHEMA_VERSION, "run_id": plan.run_id, "status": "running", "error": None,
           "warnings": plan.warnings,
           "run_info": {"model": c.model.name, "method": c.method.name, "task": c.task.name, "seed": c.seed,
                        "train_set": c.task.train_set, "started": datetime.now(timezone.utc).isoformat(),
                        "log": str(plan.paths.log) if dist.main else None,
                        "config": secrets.redact(plan.resolved)},
           "meta_info": {**env.environment(device), "world_size": dist.world}}
    estimate = vram_estimate(plan, device)
    if estimate:
        rec["vram_estimate"] = estimate
        if estimate["fits"] is False:  # vram_check=false runs it anyway (no estimate is asked for)
            rec.update(status="predicted_oom", error=f"predicted {estimate['predicted_total_gib']:.1f} GiB > "
                       f"{estimate['device_memory_gib']:.1f} GiB on this GPU (vram_check=false runs it anyway)")
            return finish(plan, dist, rec)
    tracker = tracking.start(cfg, plan.run_id, plan.resolved) if dist.main else tracking.NullTracker()
    t0 = time.perf_counter()
    predictions: dict = {}
    try:
        recipe = Recipe(plan, loaded, tracker, dist, device)
        out = recipe.run()
        predictions = recipe.predictions
        rec.update(out)
        rec["status"] = "ok"
        if dist.main:
            for name, rows in predictions.items():
                atomic.write_jsonl(plan.paths.predictions / f"{name}.jsonl", rows)
            rec["summary"] = summary(plan, out["eval"]) if "eval" in out else None
    except HarnessError:
        tracker.finish(None, {})
        raise
    except Diverged as exc:
        rec.update(status="diverged", error=str(exc), diverged_at_step=exc.step)
    except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
        rec.update(status="oom", error=f"{type(exc).__name__}: {exc}"[:2000])
    except Exception as exc:  # recorded, so a sweep goes on
        rec.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:2000],
                   traceback=traceback.format_exc()[-4000:])
    finally:
        measure.release(device)  # a run's model must not stay in memory for the next run of a sweep
    rec["run_info"]["wall_seconds"] = round(time.perf_counter() - t0, 3)
    rec["run_info"]["finished"] = datetime.now(timezone.utc).isoformat()
    typed = finish(plan, dist, rec)
    if dist.main and typed.status in record.TERMINAL:  # answered: a rerun skips it, the snapshot has no more use
        Checkpoints(plan.paths.train_state).clear()
    tracker.finish(typed, predictions)
    return typed


def finish(plan: Plan, dist: Dist, fields: dict) -> record.Record:
    """The record typed (harness.record.schema: a field of the wrong type fails here, not in a reader)
    and written, atomically, by rank 0."""
    rec = record.Record.parse(fields)
    if dist.main:
        record.write(plan.paths.record, rec)
        log.info("%s: %s -> %s", plan.run_id, rec.status, plan.paths.record)
    return rec
