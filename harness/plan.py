"""python -m harness.plan [key=value ...] [--gpu H100-80GB] [--mfu 0.15] [--csv FILE]

Every run of a sweep (`sweep=paper`, or comma lists: `method=lora,dora`) or a study
(`study=cpu-study`) before anything is spent, from configs alone (no weights loaded, nothing
fetched): its method settings, training examples and tokens, the VRAM estimate (harness.vram)
against a GPU, a predicted training time and the total GPU-hours. A run that would not fit gets
the cheapest change that makes it fit. Where a record of the run exists (results_dir/runs), its
measured peak memory and training time stand beside the prediction. Exit status: 0 planned; 2 bad input (one line).

Throughput model: training seconds = tokens x FLOPs per token / (MFU x the GPU's dense bf16 peak).
FLOPs per token are 6N with the base trained, 4N with it frozen (harness.methods; +2N when
activations are recomputed). MFU is the median of measured CUDA records of the same model and
method where any exist, else `--mfu` (an assumption, stated in the output). Tokens per example:
the mean of measured records of the same task family (any model's tokenizer), else train.cutoff_len
(an upper bound). Evaluation time is not included. Without `--gpu`, the time on this machine's CPU
too: tokens / the median training tokens/s of records of the same model and method on a CPU of the
same model. A run's own record never feeds its own prediction (medians leave it out), so the error
beside it is a real one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import ConfigError, HarnessError

# name -> (what torch.cuda.get_device_name says, the memory CUDA reports, GiB); peaks from
# harness.pipeline.measure.BF16_PEAK_TFLOPS, the table MFU is computed with
GPUS = {
    "H100-80GB": ("NVIDIA H100 80GB HBM3", 79.1),
    "H100-PCIe": ("NVIDIA H100 PCIe", 79.1),
    "H200": ("NVIDIA H200", 139.8),  # measured: results/gpu/nvidia-h200
    "A100-80GB": ("NVIDIA A100-SXM4-80GB", 79.1),
    "A100-40GB": ("NVIDIA A100-SXM4-40GB", 39.4),
    "L40S": ("NVIDIA L40S", 44.4),
    "L4": ("NVIDIA L4", 22.0),
    "A10": ("NVIDIA A10", 22.0),
}
# No GPU record of a model and method: an assumption, not a measurement (records of SmolLM2-135M on the
# H200 reach 0.1-1.2%: a small model is overhead-bound, which says nothing of a 7B one); --mfu replaces it
ASSUMED_MFU = 0.15


@dataclass
class Gpu:
    name: str
    memory_gib: float
    peak_tflops: float | None


def gpu_of(name: str | None, fallback_gib: float) -> Gpu:
    from harness.pipeline.measure import peak_tflops_for
    if name is None:  # memory only (cluster.gpu_memory_gib): no peak, no time
        return Gpu("cluster.gpu_memory_gib", fallback_gib, None)
    if name not in GPUS:
        raise ConfigError(f"--gpu {name}: unknown; choose one of {', '.join(GPUS)}")
    device_name, memory = GPUS[name]
    return Gpu(name, memory, peak_tflops_for(device_name))


# ---- what measured records say ---------------------------------------------------------------

@dataclass
class Measured:
    tokens_per_example: dict  # task family -> (mean, records)
    mfu: dict  # (model, method) -> {run id: MFU} of CUDA records
    cpu_speed: dict  # (model, method, CPU model) -> {run id: training tokens/s} of CPU records

    @staticmethod
    def median(table: dict, key, leave_out: str) -> tuple[float | None, int]:
        """The median over the records of `key` other than the run's own (`leave_out`): a prediction
        shown beside a measurement must not be made from that measurement."""
        values = [v for run_id, v in table.get(key, {}).items() if run_id != leave_out]
        return (statistics.median(values), len(values)) if values else (None, 0)


def measured(dirs: list[Path]) -> Measured:
    from harness import record
    per_example, mfu, cpu = {}, {}, {}
    for directory in dirs:
        for _, rec in record.load_records(directory)[0] if directory.is_dir() else []:
            t, who = rec.throughput, (rec.run_info.model, rec.run_info.method)
            if rec.ok and t.real_tokens and t.samples:
                per_example.setdefault(rec.run_info.task, []).append(t.real_tokens / t.samples)
            if rec.ok and t.mfu and rec.meta_info.device_type == "cuda":
                mfu.setdefault(who, {})[rec.run_id] = t.mfu
            if rec.ok and t.tokens_per_second and rec.meta_info.device_type == "cpu" and rec.meta_info.cpu_model:
                cpu.setdefault((*who, rec.meta_info.cpu_model), {})[rec.run_id] = t.tokens_per_second
    return Measured({k: (statistics.mean(v), len(v)) for k, v in per_example.items()}, mfu, cpu)


def record_dirs(results_dir: str) -> list[Path]:
    """The records a plan learns from: this results directory's, every committed baseline's and the
    GPU sessions' (results/gpu/<device>/<what>/runs)."""
    root = Path(results_dir)
    found = {p.parent for p in root.glob("**/runs/*.json")} | {p for p in (root / "baselines").glob("*") if p.is_dir()
                                                                 and not (p / "runs").is_dir()}
    return sorted(found)


# ---- one run ---------------------------------------------------------------------------------

def method_settings(m) -> str:
    """The method's learning rate and the settings of the sections it reads (harness.methods)."""
    from harness import methods
    sections = methods.get(m.name).sections
    parts = [f"lr {m.lr:.3g}"]
    if "peft" in sections:
        parts += [f"{k} {m.peft[k]}" for k in ("r", "lora_alpha", "num_virtual_tokens") if k in m.peft]
    if "adapter" in sections:
        parts.append(f"bottleneck {m.adapter.bottleneck_size}")
    if "quantization" in sections and m.quantization.bits:
        parts.append(f"{m.quantization.bits}-bit base")
    return ", ".join(parts)


def estimate(resolved: dict, gpu: Gpu) -> dict:
    from harness.vram import predict_peak_gib
    return predict_peak_gib(resolved, gpu.memory_gib)


def cheapest_fit(cfg, resolved: dict, gpu: Gpu) -> tuple[str, dict] | None:
    """The first change, cheapest first, whose estimate fits: a smaller micro-batch (the batch is kept
    by accumulation), then recomputed activations, then a 4-bit base for a LoRA-family method."""
    from harness import methods
    from harness.config.overrides import resolve_one
    spec = methods.get(cfg.method.name)
    variants = [("", resolved)]
    if spec.peft_config == "LoraConfig" and not (cfg.method.get("quantization") or {}).get("bits"):
        quant = OmegaConf.to_container(resolve_one([f"model={cfg.model.name}", "method=qlora4"], here=False).method)
        variants.append(("method=qlora4", {**resolved, "method": {**quant, "lr": resolved["method"]["lr"]}}))
    for label, base in variants:
        for checkpointing in (False, True):
            mbs = base["train"]["micro_batch_size"]
            while mbs >= 1:
                train = {**base["train"], "micro_batch_size": mbs, "gradient_checkpointing": checkpointing}
                est = estimate({**base, "train": train}, gpu)
                if est["fits"]:
                    change = [label] if label else []
                    change += [f"train.micro_batch_size={mbs}"] if mbs != resolved["train"]["micro_batch_size"] else []
                    change += ["train.gradient_checkpointing=true"] if checkpointing else []
                    return " ".join(change), est
                mbs //= 2
    return None


def plan_run(cfg, gpu: Gpu, seen: Measured, mfu: float) -> dict:
    from harness import methods, record, tasks
    from harness.pipeline.train import total_steps
    resolved = OmegaConf.to_container(cfg, resolve=True)
    spec, t = methods.get(cfg.method.name), cfg.train
    size, size_basis = tasks.train_set_size(tasks.get_family(cfg.task.name).train_set(cfg.task.train_set),
                                            cfg.cache_dir)
    examples = None if size is None else max(0, size - cfg.validation.size)
    if examples is not None and t.limit:
        examples = min(examples, t.limit)
    steps = total_steps(t, examples) if examples is not None else (t.max_steps or None)
    per_example, n = seen.tokens_per_example.get(cfg.task.name, (float(t.cutoff_len), 0))
    tokens = steps * t.batch_size * min(per_example, t.cutoff_len) if steps and spec.trains else 0
    row = {"run": f"{cfg.model.name} x {cfg.method.name} x {cfg.task.name} (seed {cfg.seed}"
                  + (f", {cfg.stage} lr {cfg.method.lr:.3g})" if cfg.stage != "run" else ")"),
           "settings": method_settings(cfg.method), "examples": examples, "examples_basis": size_basis, "steps": steps,
           "tokens_M": round(tokens / 1e6, 2) if steps else None,
           "tokens_basis": f"mean of {n} records" if n else "cutoff_len (upper bound)"}
    fit, checkpointing, est = memory(cfg, resolved, gpu)
    row.update(fit)
    who = (cfg.model.name, cfg.method.name)
    run_mfu, mfu_n = seen.median(seen.mfu, who, leave_out=record.run_id(resolved, "cuda"))
    run_mfu = run_mfu or mfu
    from harness.vram.architecture import model_shape
    flops = (spec.flops_per_param_token + (2 if checkpointing else 0)) * model_shape(resolved["model"]).total_params
    hours = tokens * flops / (run_mfu * gpu.peak_tflops * 1e12) / 3600 if gpu.peak_tflops and tokens else None
    row.update(train_hours=hours,
               mfu=f"{run_mfu:.2g} ({'median of %d records' % mfu_n if mfu_n else 'assumed'})")
    if est is not None:
        row.update(measured_beside(cfg, resolved, est, hours, record))
    if gpu.peak_tflops is None:  # no GPU named: this machine's CPU too, as far as records of it say
        row.update(this_cpu(cfg, resolved, tokens, seen, record))
    return row


def this_cpu(cfg, resolved: dict, tokens: float, seen: Measured, record) -> dict:
    """Training time on this machine's CPU: tokens / the median training tokens/s of the other records
    of the model and method on a CPU of the same model (none: no prediction), beside the run's own
    CPU record where one exists (its training time, the error, its peak RSS; the VRAM estimate models
    GPU memory, so RSS stands beside it without an error)."""
    from harness.record.env import cpu_model
    own = record.run_id(resolved, "cpu")
    speed, n = seen.median(seen.cpu_speed, (cfg.model.name, cfg.method.name, cpu_model()), leave_out=own)
    minutes = tokens / speed / 60 if speed and tokens else None
    out = {"cpu_minutes": minutes, "cpu_speed": f"{speed:.0f} tok/s (median of {n} records)" if n else "no record"}
    rec = record.read_record(Path(cfg.results_dir) / "runs" / f"{own}.json")
    if rec is not None and rec.ok and rec.throughput.wall_seconds:
        wall = rec.throughput.wall_seconds
        out.update(measured_cpu_minutes=round(wall / 60, 3),
                   cpu_minutes_error_pct=round(100 * (minutes * 60 / wall - 1), 1) if minutes else None,
                   measured_rss_gib=rec.phase_memory("train").peak_rss_gib)
    return out


def memory(cfg, resolved: dict, gpu: Gpu) -> tuple[dict, bool, dict | None]:
    """The run's memory columns, whether it recomputes activations (as configured, or as the change that
    makes it fit), and the estimate (None for a method the estimator does not model: said in the row)."""
    try:
        est = estimate(resolved, gpu)
    except HarnessError as exc:
        return {"predicted_gib": None, "fits": None, "change": f"no VRAM estimate: {str(exc).split(':')[0]}"}, \
            bool(cfg.train.gradient_checkpointing), None
    fit = {"predicted_gib": round(est["predicted_total_gib"], 1), "fits": est["fits"], "change": ""}
    checkpointing = bool(cfg.train.gradient_checkpointing)
    if not est["fits"]:
        found = cheapest_fit(cfg, resolved, gpu)
        fit["change"] = f"{found[0]} -> {found[1]['predicted_total_gib']:.1f} GiB" if found else "none found"
        checkpointing = checkpointing or (found is not None and "gradient_checkpointing" in found[0])
    return fit, checkpointing, est


def measured_beside(cfg, resolved: dict, est: dict, hours: float | None, record) -> dict:
    """This run's own CUDA record, where one exists: measured peak and training time and the errors."""
    rec = record.read_record(Path(cfg.results_dir) / "runs" / f"{record.run_id(resolved, 'cuda')}.json")
    if rec is None or not rec.ok:
        return {}
    peak, wall = rec.phase_memory("train").peak_allocated_gib, rec.throughput.wall_seconds
    out = {}
    if peak:
        # like with like: the predicted allocator peak (no CUDA context), what the record measured
        out.update(predicted_peak_gib=round(est["predicted_peak_gib"], 2), measured_gib=round(peak, 2),
                   gib_error_pct=round(100 * (est["predicted_peak_gib"] / peak - 1), 1))
    if wall:
        out.update(measured_hours=round(wall / 3600, 3),
                   hours_error_pct=round(100 * (hours * 3600 / wall - 1), 1) if hours else None)
    return out


# ---- the command -----------------------------------------------------------------------------

def study_runs(overrides: list[str]) -> list:
    """A study's runs as far as they are known before it starts: each method's grid at the study's first
    seed, and its final runs at the recipe's rate (the chosen rate changes no cost). A winner at an end
    of the grid adds points (study.extend_grid): those are not known yet."""
    from harness import study as studies
    name = next(o.split("=", 1)[1] for o in overrides if o.startswith("study="))
    s = studies.load(name, overrides)
    extra = [o for o in overrides if not o.startswith("study")]
    cfgs = []
    for method in s.methods:
        lr = studies.recipe_lr(s, method)
        cfgs += [studies.run_config(s, method, lr * x, "tune", s.seeds[0], extra, here=False) for x in s.lr_grid]
        cfgs += [studies.run_config(s, method, lr, "final", seed, [f"+tags.chosen_lr={lr:.6g}", *extra], here=False)
                 for seed in s.seeds]
    return cfgs


def plan(overrides: list[str], gpu_name: str | None, mfu: float):
    import pandas as pd
    from harness.config.overrides import resolve
    if any(o.startswith("study=") for o in overrides):
        cfgs = study_runs(overrides)
    else:
        cfgs, _, _ = resolve(overrides, multirun=True, here=False)
    gpu = gpu_of(gpu_name, float(cfgs[0].cluster.gpu_memory_gib))
    seen = measured(record_dirs(cfgs[0].results_dir))
    return gpu, pd.DataFrame([plan_run(cfg, gpu, seen, mfu) for cfg in cfgs])


def summary(gpu: Gpu, table, mfu: float) -> str:
    stuck = table["change"] == "none found"  # cannot run on this GPU: not in the total
    hours = table["train_hours"].where(~stuck)
    total = f"{hours.sum():.1f} GPU-hours of training" if hours.notna().any() else "no time (give --gpu)"
    if table["fits"].isna().any():
        total += f"; {int(table['fits'].isna().sum())} runs without a VRAM estimate (a method the estimator does not model)"
    if stuck.any():
        total += f"; {int(stuck.sum())} runs fit no change tried (left out of the total)"
    unknown = int(table["examples"].isna().sum())
    nominal = int(table["examples_basis"].str.startswith("nominal").sum())
    lines = [f"{len(table)} runs on {gpu.name} ({gpu.memory_gib:g} GiB): {int(table['fits'].eq(False).sum())} do not fit "
             f"as configured; {total}"]
    if "cpu_minutes" in table:
        known = table["cpu_minutes"].notna()
        lines.append(f"on this machine's CPU: {table['cpu_minutes'].sum():.1f} minutes of training for the {int(known.sum())} "
                     f"runs whose model and method have CPU records here" + (
                         f"; measured beside for {int(table['measured_cpu_minutes'].notna().sum())}, median error "
                         f"{table['cpu_minutes_error_pct'].abs().median():.0f}%" if "measured_cpu_minutes" in table
                         and table["cpu_minutes_error_pct"].notna().any() else ""))
    if unknown:
        lines.append(f"{unknown} runs train on a file not fetched yet (the paper's sets: fetched on their first run): "
                     f"no examples, tokens or time for them")
    if nominal:
        lines.append(f"{nominal} runs train on one of the paper's files, not fetched yet: their examples are the size "
                     f"the file's name states (math_10k: 10,000), counted exactly once it is fetched")
    if (table["run"].str.contains(", tune lr")).any():
        lines.append("a study: its grid extension (a winner at an end of the grid adds a point) is not known before "
                     "tuning; each added point costs one more tuning run")
    lines.append(f"throughput model: tokens x FLOPs/token / (MFU x peak); MFU {mfu:g} assumed unless measured; "
                 f"evaluation not included (python -m harness.plan --help)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.plan", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("overrides", nargs="*", help="the sweep: sweep=paper, method=lora,dora, ...")
    p.add_argument("--gpu", choices=list(GPUS), help="the GPU to plan for (default: memory from cluster.gpu_memory_gib)")
    p.add_argument("--mfu", type=float, default=ASSUMED_MFU, help=f"assumed MFU where no record measured it ({ASSUMED_MFU})")
    p.add_argument("--csv", type=Path, help="also write the table here")
    args = p.parse_args(argv)
    try:
        if not 0 < args.mfu <= 1:
            raise ConfigError(f"--mfu {args.mfu}: give a fraction in (0, 1]")
        gpu, table = plan(args.overrides, args.gpu, args.mfu)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import pandas as pd
    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 250,
                           "display.max_colwidth", 60):
        print(table.round(2).to_string(index=False, na_rep="-"))
    print(summary(gpu, table, args.mfu))
    if args.csv:
        from harness.record import atomic
        atomic.write_bytes(args.csv, table.to_csv(index=False).encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
