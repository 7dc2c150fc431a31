"""python -m harness.bench [key=value ...] [--methods lora,full] [--steps N] [--eval-questions N]
[--eval-set gsm8k] [--eval-max-new-tokens N] [--suite] [--out results/bench]

key=value overrides are the main CLI's, checked the same way (harness.config.overrides): model=, train.batch_size=,
train.micro_batch_size=, train.cutoff_len=, eval.batch_size=, device=, cache_dir= ... Everything is
resolved and checked (methods, batch sizes, data, output directory) before any model is loaded;
bad input prints "error: ..." and exits 2. A method that fails while running is recorded as a
failed row and the bench goes on; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from omegaconf import OmegaConf

from harness import data, methods, tasks
from harness.bench import evaluation, report, training
from harness.config.overrides import resolve as resolve_runs
from harness.errors import ConfigError, HarnessError
from harness.pipeline import evaluate, measure, models
from harness.record import env
from harness.ui import console


def training_methods() -> list[str]:
    """Every registered method that trains (the registry, not a hand-kept list)."""
    return [n for n, spec in methods.all_methods().items() if spec.trains]

# (GPU, CPU) defaults: a meaningful measurement on a GPU, a quick exercise of every path on a CPU
DEFAULT_MODEL = ("smollm2-135m", "tiny-random")
DEFAULT_STEPS = (20, 3)
DEFAULT_EVAL_QUESTIONS = (64, 4)
DEFAULT_CLOZE_ITEMS = (64, 4)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m harness.bench", description=(
        "Plain transformers+peft training and LLM-Adapters-style evaluation vs the harness, same work."))
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="run-config overrides, as for python -m harness")
    parser.add_argument("--methods", help="comma-separated (default: every registered method that trains)")
    parser.add_argument("-v", "--verbose", action="store_true", help="library progress bars on the console")
    parser.add_argument("--steps", type=int, help="timed optimizer steps per side (default 20 on GPU, 3 on CPU)")
    parser.add_argument("--eval-questions", type=int, help="questions for the evaluation comparison "
                        "(default 64 on GPU, 4 on CPU; 0 skips it)")
    parser.add_argument("--eval-set", default="gsm8k", help="test set of the evaluation comparison (default gsm8k)")
    parser.add_argument("--eval-max-new-tokens", type=int, help="generation cap for both evaluations "
                        "(default eval.max_new_tokens, else the task's: 256 for arithmetic)")
    parser.add_argument("--cloze-items", type=int, help="items per commonsense set for the cloze scoring "
                        "comparison with lm-eval's HFLM (default 64 on GPU, 4 on CPU; 0 skips it)")
    parser.add_argument("--suite", action="store_true", help="also time the harness evaluation of all 15 test "
                        "sets (the <= 5 min target; eval.limit=N shortens it)")
    parser.add_argument("--baselines", default=",".join(BASELINES),
                        help=f"library baselines to run (default {','.join(BASELINES)})")
    parser.add_argument("--levers", help="harness levers measured one at a time (default: packing, bf16, "
                        "fused_optimizer, compile); 'none' for the plain harness row only")
    parser.add_argument("--out", default="results/bench", help="output directory (default results/bench)")
    parser.add_argument("--resume", metavar="BENCH.json", help="continue a partial bench document (one cut short): "
                        "its measured methods are kept, the others run, and the document is completed in place; "
                        "the settings must be the ones it was started with")
    return parser.parse_intermixed_args(argv)


BASELINES = ("reference", "trainer_tuned", "trl_padding_free", "naive")


def parse_list(spec: str | None, valid, default, what: str) -> list[str]:
    names = list(default) if spec is None else [x.strip() for x in spec.split(",") if x.strip() and x != "none"]
    unknown = [x for x in names if x not in valid]
    if unknown:
        raise ConfigError(f"unknown {what} {unknown}; choose from {','.join(valid)}")
    return list(dict.fromkeys(names))


@dataclass
class Settings:
    device: torch.device
    model: str
    overrides: list[str]
    base: object  # the resolved run config without the method (train/eval/task/model)
    configs: dict  # method -> resolved run config
    skipped: list[dict]
    steps: int
    train_records: list[dict]
    train_provenance: list[dict]
    eval_questions: int
    eval_set: tasks.TestSet
    eval_records: list[dict]
    eval_max_new_tokens: int
    cloze_items: int
    suite: bool
    out: Path
    baselines: list = field(default_factory=list)
    levers: list = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    resume: dict | None = None  # the partial document being completed, with its path


def _override_key(item: str) -> str:
    if "=" not in item:
        raise ConfigError(f"'{item}' is not a key=value override; bench flags start with -- (see --help)")
    return item.split("=", 1)[0].lstrip("+~")


def parse_methods(spec: str | None) -> tuple[list[str], list[dict]]:
    """(methods to run, skipped with the reason). Unknown names are an error, listing the valid ones."""
    valid = training_methods()
    names = valid if spec is None else [m.strip() for m in spec.split(",") if m.strip()]
    if not names:
        raise ConfigError("--methods is empty; give e.g. --methods lora,full")
    unknown = [m for m in names if m not in valid]
    if unknown:
        raise ConfigError(f"unknown method(s) {unknown} in --methods; choose from {','.join(valid)}")
    names = list(dict.fromkeys(names))  # keep order, drop repeats
    skipped = []
    if importlib.util.find_spec("bitsandbytes") is None:
        skipped = [{"method": m, "reason": "bitsandbytes is not installed (pip install bitsandbytes)"}
                   for m in names if methods.get(m).quantization == "required"]
    run = [m for m in names if m not in {s["method"] for s in skipped}]
    if not run:
        raise ConfigError(f"nothing to run: {[s['method'] for s in skipped]} need bitsandbytes, which is not installed")
    return run, skipped


def _positive(name: str, value: int, minimum: int = 1) -> int:
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, not {value}")
    return value


def eval_items(name: str, n: int, base) -> tuple:
    """The --eval-set test set and its first --eval-questions items."""
    all_sets = tasks.all_test_sets()
    if name not in all_sets:
        raise ConfigError(f"unknown --eval-set '{name}'; choose from {sorted(all_sets)}")
    ts = all_sets[name]
    if not n:
        return ts, []
    records, _ = tasks.load_test_set(ts, base.cache_dir, base.eval.hellaswag)
    if n > len(records):
        raise ConfigError(f"--eval-questions {n} is more than {ts.name} holds ({len(records)})")
    return ts, records[:n]


def writable_dir(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError("not writable")
    except OSError as exc:
        raise ConfigError(f"cannot write to --out {out}: {exc}; pass --out <writable dir>") from exc
    return out


def resolve(args: argparse.Namespace, argv: list[str]) -> Settings:
    """Everything checked before any model is built."""
    overrides = list(args.overrides)
    keys = [_override_key(o) for o in overrides]
    if "method" in keys:
        raise ConfigError("choose methods with --methods lora,full, not method=")
    device_arg = next((o.split("=", 1)[1] for o in overrides if _override_key(o) == "device"), "auto")
    device = models.resolve_device(device_arg)
    gpu = device.type == "cuda"
    pick = (lambda pair: pair[0 if gpu else 1])  # noqa: E731
    if "model" not in keys:
        overrides = [f"model={pick(DEFAULT_MODEL)}"] + overrides
    names, skipped = parse_methods(args.methods)
    # every method's run config, checked together as one sweep (method=none: the evaluation side)
    cfgs, _, _ = resolve_runs(overrides + [f"method={','.join(['none'] + names)}"], multirun=True)
    configs = {cfg.method.name: cfg for cfg in cfgs}
    base = configs.pop("none")
    # the first optimizer step is never timed: at least one more must be
    steps = _positive("--steps", args.steps if args.steps is not None else pick(DEFAULT_STEPS), minimum=2)

    family = tasks.get_family(base.task.name)
    records, provenance = tasks.load_train_set(family.train_set(base.task.train_set), base.cache_dir)
    need = steps * base.train.batch_size
    if len(records) < need:
        raise ConfigError(f"--steps {steps} x train.batch_size {base.train.batch_size} needs {need} training "
                          f"examples; {base.task.train_set} has {len(records)}")
    # one epoch of exactly `steps` steps, shuffled as the runner does
    train_records = data.to_dataset(records).shuffle(seed=base.seed).select(range(need)).to_list()

    n_eval = _positive("--eval-questions", args.eval_questions if args.eval_questions is not None
                       else pick(DEFAULT_EVAL_QUESTIONS), minimum=0)
    ts, eval_records = eval_items(args.eval_set, n_eval, base)
    max_new = args.eval_max_new_tokens or evaluate.max_new_tokens(base)
    out = writable_dir(Path(args.out))
    levers = parse_list(args.levers, training.LEVERS, training.LEVERS, "--levers")
    baselines = parse_list(args.baselines, BASELINES, BASELINES, "--baselines")
    if "reference" not in baselines:
        raise ConfigError("--baselines must include reference: every ratio is against it")
    settings = Settings(device=device, model=base.model.name, overrides=overrides, base=base, configs=configs,
                    baselines=baselines, levers=levers,
                    skipped=skipped, steps=steps, train_records=train_records, train_provenance=provenance,
                    eval_questions=n_eval, eval_set=ts, eval_records=eval_records,
                    eval_max_new_tokens=_positive("--eval-max-new-tokens", max_new), suite=args.suite, out=out,
                    cloze_items=_positive("--cloze-items", args.cloze_items if args.cloze_items is not None
                                          else pick(DEFAULT_CLOZE_ITEMS), minimum=0),
                    argv=list(argv))
    if args.resume:
        settings.resume = load_partial(Path(args.resume), settings)
    return settings


# what must be equal for a resumed bench's rows to be one measurement with the new ones
RESUME_KEYS = ("model", "device", "steps", "baselines", "levers", "overrides", "train_examples", "run_config",
               "eval_set", "eval_questions", "eval_max_new_tokens", "cloze_items", "suite")


def load_partial(path: Path, s: Settings) -> dict:
    """The partial document --resume continues, checked against this invocation's settings."""
    import json
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume {path}: cannot read a bench document ({exc})") from exc
    if doc.get("kind") != "peft-bench/bench":
        raise ConfigError(f"--resume {path} is not a bench document (kind {doc.get('kind')!r})")
    if doc.get("complete"):
        raise ConfigError(f"--resume {path} is complete already; start a new bench instead")
    new = document(s, datetime.now(timezone.utc), [], {}, complete=False)["config"]
    differ = [k for k in RESUME_KEYS if doc["config"].get(k) != new.get(k)]
    if differ:
        raise ConfigError(f"--resume {path} was started with other settings ({', '.join(differ)}); "
                          f"rerun with the command in its config.argv: {' '.join(doc['config'].get('argv', []))}")
    done = [row["method"] for row in doc.get("training", [])]
    if not set(done) <= set(s.configs):
        raise ConfigError(f"--resume {path} measured {done}; --methods must include them all")
    here = env.environment(s.device)
    same = ("device_name", "cpu_count") + (("cpu_model",) if "cpu_model" in doc["environment"] else ())
    if any(doc["environment"].get(k) != here.get(k) for k in same):
        raise ConfigError(f"--resume {path} was measured on another machine ({doc['environment'].get('device_name')}, "
                          f"{doc['environment'].get('cpu_count')} cores); start a new bench here")
    return {"doc": doc, "path": path}


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def run_evaluations(s: Settings) -> tuple[dict | None, dict | None, dict | None]:
    if not s.eval_questions and not s.suite and not s.cloze_items:
        return None, None, None
    cfg = s.base
    dtype = models.compute_dtype(s.device, cfg.train.precision)
    model, tok, _ = training.build(cfg, s.device, dtype)
    comparison = suite = cloze_cmp = None
    try:
        if s.eval_questions:
            say(f"evaluation: {s.eval_questions} {s.eval_set.name} questions: reference (beam 4, batch 1), plain "
                f"batched greedy, harness per item and batched")
            by_precision = {str(dtype).replace("torch.", "").replace("float32", "fp32").replace("bfloat16", "bf16"): model}
            if "bf16" in s.levers and dtype != torch.bfloat16 and models.fast_bf16(s.device):
                by_precision["bf16"] = training.build(cfg, s.device, torch.bfloat16)[0]
            comparison = evaluation.compare(by_precision, tok, s.eval_set, s.eval_records, cfg,
                                            s.eval_max_new_tokens, s.device)
            for name, side in comparison["sides"].items():
                say(f"evaluation {name}: {side['questions_per_second']:.3f} q/s ({side['speedup']:.2f}x the reference)")
            del by_precision
        if s.cloze_items:
            say(f"cloze: {s.cloze_items} items per commonsense set, harness vs lm-eval's HFLM")
            cloze_cmp = evaluation.cloze_vs_lm_eval(model, tok, cfg, s.device, s.cloze_items)
            say(f"cloze: {cloze_cmp.get('speedup_vs_lm_eval') or cloze_cmp.get('lm_eval')}")
        if s.suite:
            say("suite: harness evaluation of every test set")
            suite = evaluation.suite(model, tok, cfg, s.device)
            say(f"suite: {suite['questions']} questions in {suite['seconds']:.1f} s")
    finally:
        del model
        measure.release(s.device)
    return comparison, suite, cloze_cmp


def document(s: Settings, started: datetime, rows: list[dict], evaluations: dict, complete: bool) -> dict:
    """The bench's JSON document; written after every method (complete=false) so that a bench cut
    short keeps what it measured, and once more at the end."""
    resolved = OmegaConf.to_container(s.base, resolve=True)
    return {
        "kind": "peft-bench/bench", "schema": 1, "started": started.isoformat(), "complete": complete,
        "finished": datetime.now(timezone.utc).isoformat(),
        "config": {"model": s.model, "device": s.device.type, "methods": list(s.configs), "steps": s.steps,
                   "untimed_first_steps": 1, "baselines": s.baselines, "levers": s.levers,
                   "eval_set": s.eval_set.name, "eval_questions": s.eval_questions,
                   "eval_max_new_tokens": s.eval_max_new_tokens, "suite": s.suite, "out": str(s.out),
                   "cloze_items": s.cloze_items,
                   "overrides": s.overrides, "argv": s.argv, "train_examples": len(s.train_records),
                   "train_data": s.train_provenance,
                   "run_config": {k: v for k, v in resolved.items() if k != "method"}},
        "environment": env.environment(s.device),
        "targets": {"train_speedup_min": training.TARGET_TRAIN_SPEEDUP,
                    "train_memory_ratio_max": training.TARGET_MEMORY_RATIO,
                    "train_speedup_vs_tuned_min": training.TARGET_TUNED_SPEEDUP,
                    "suite_seconds_max": evaluation.TARGET_SUITE_SECONDS},
        "training": rows, "skipped": s.skipped, **evaluations,
        "resumed": ([*s.resume["doc"].get("resumed", []), datetime.now(timezone.utc).isoformat()]
                    if s.resume else []),
    }


def run(s: Settings) -> int:
    started = datetime.now(timezone.utc)
    stem = report.output_stem(s.out, s.device, s.model, started)
    rows: list[dict] = []
    if s.resume:
        doc = s.resume["doc"]
        started, rows = datetime.fromisoformat(doc["started"]), list(doc["training"])
        stem = s.resume["path"].parent / s.resume["path"].name.removesuffix(".json")
        say(f"resuming {s.resume['path']}: kept {', '.join(r['method'] for r in rows)}")
    done = {row["method"] for row in rows}
    nothing = {"evaluation": None, "suite": None, "cloze": None, "evaluation_error": None}
    for name, cfg in s.configs.items():
        if name in done:
            continue
        say(f"{name}: {', '.join(s.baselines)}, harness and its levers ({', '.join(s.levers) or 'none'}), "
            f"{s.steps} optimizer steps each")
        row = training.compare_method(cfg, s.train_records, s.steps, s.levers, s.baselines)
        rows.append(row)
        for loop, r in row["rows"].items():
            if r["status"] == "ok":
                say(f"{name} {loop}: {r['tokens_per_second'] or 0:,.0f} tok/s ({r.get('speedup') or 0:.2f}x the "
                    f"reference), peak {r['peak_gib']} GiB, mean loss {r['loss_mean']}")
            else:
                say(f"{name} {loop}: {r['status']} {r.get('error') or r.get('why')}")
        report.write(document(s, started, rows, nothing, complete=False), stem)
    evaluations = dict(nothing)
    try:
        evaluations["evaluation"], evaluations["suite"], evaluations["cloze"] = run_evaluations(s)
    except HarnessError:
        raise
    except Exception as exc:  # noqa: BLE001 - keep the training rows: write what was measured
        evaluations["evaluation_error"] = f"{type(exc).__name__}: {exc}"[:1000]
        say(f"evaluation FAILED: {evaluations['evaluation_error']}")
    doc = document(s, started, rows, evaluations, complete=True)
    json_path, md_path = report.write(doc, stem)
    print(report.markdown(doc))
    say(f"wrote {json_path} and {md_path}")
    failed = [r for row in rows for r in row["rows"].values() if r["status"] == "failed"]
    return 0 if not failed and not evaluations["evaluation_error"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        console.libraries(args.verbose)  # weight-loading bars for every model built would bury the table
        return run(resolve(args, argv))
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
