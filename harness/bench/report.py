"""The bench's outputs: one JSON document and a Markdown table, written atomically side by side."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import torch

from harness import atomic
from harness.bench import TARGET_MEMORY_RATIO, TARGET_SUITE_SECONDS, TARGET_TRAIN_SPEEDUP


def device_slug(device: torch.device) -> str:
    """'cpu', or the GPU's name ('nvidia-h100-80gb-hbm3'): results from different GPUs never collide."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def output_stem(out_dir: Path, device: torch.device, model: str, when: datetime) -> Path:
    stem = f"{device_slug(device)}-{model}-{when.strftime('%Y%m%dT%H%M%SZ')}"
    path, n = out_dir / stem, 1
    while with_suffix(path, ".json").exists():  # two runs in the same second
        n += 1
        path = out_dir / f"{stem}-{n}"
    return path


def with_suffix(stem: Path, suffix: str) -> Path:
    """stem + suffix (Path.with_suffix would cut model names with dots: qwen2.5-0.5b)."""
    return stem.parent / (stem.name + suffix)


def _num(x, fmt: str = "{:,.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def training_table(rows: list[dict]) -> list[str]:
    lines = ["| method | plain tok/s | harness tok/s | speedup | plain peak GiB | harness peak GiB | memory ratio "
             "| final loss plain / harness | flags |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        if r["status"] != "ok":
            lines.append(f"| {r['method']} | — | — | — | — | — | — | — | failed: {r['error'][:120]} |")
            continue
        p, h = r["plain"], r["harness"]
        lines.append(
            f"| {r['method']} | {_num(p['tokens_per_second'])} | {_num(h['tokens_per_second'])} "
            f"| {_num(r['speedup'], '{:.2f}×')} | {_num(p['peak_gib'], '{:.3f}')} | {_num(h['peak_gib'], '{:.3f}')} "
            f"| {_num(r['memory_ratio'], '{:.3f}')} | {_num(p['loss_last'], '{:.4f}')} / "
            f"{_num(h['loss_last'], '{:.4f}')} | {'; '.join(r['flags']) or 'meets targets'} |")
    return lines


def eval_table(ev: dict) -> list[str]:
    ref, h = ev["reference"], ev["harness"]
    return ["| test set | questions | reference q/s (batch 1, beam 4) | harness q/s | speedup "
            "| reference accuracy | harness accuracy |",
            "|---|---:|---:|---:|---:|---:|---:|",
            f"| {ev['test_set']} | {ev['questions']} | {ref['questions_per_second']:.3f} "
            f"| {h['questions_per_second']:.3f} | {ev['speedup']:.2f}× | {ref['accuracy']:.1f}% "
            f"| {h['accuracy']:.1f}% ({h['decoding']}, batch {h['batch_size']}) |"]


def suite_lines(s: dict) -> list[str]:
    verdict = ("meets target" if s["meets_target"] else f"over the {TARGET_SUITE_SECONDS:g} s target"
               ) if s["complete"] else "eval.limit set: not the whole suite, target not judged"
    return [f"Harness evaluation of all {s['test_sets']} test sets: {s['questions']} questions in "
            f"{s['seconds']:.1f} s ({s['questions_per_second']:.1f} q/s) — {verdict}."]


def markdown(doc: dict) -> str:
    c = doc["config"]
    t = c["run_config"]["train"]
    lines = [f"# peft-bench: {c['model']} on {doc['environment'].get('device_name')} ({c['device']})", "",
             f"Training: {c['steps']} timed optimizer steps per side after 1 warm-up step; batch {t['batch_size']}, "
             f"micro-batch {t['micro_batch_size']}, cutoff_len {t['cutoff_len']}; tokens/s counts real "
             f"(non-pad) tokens over the timed steps (per-run setup excluded on both sides). Targets: ≥ {TARGET_TRAIN_SPEEDUP:g}× tokens/s with memory ratio ≤ "
             f"{TARGET_MEMORY_RATIO:g} (peak {'allocated' if c['device'] == 'cuda' else 'RSS'})."]
    kernels = sorted({r["harness"]["fused_loss"] for r in doc["training"] if r["status"] == "ok"})
    if kernels:
        lines.append(f"Harness loss: {'/'.join(kernels)} (liger = fused linear cross-entropy; the plain loop "
                     f"always uses the model's own loss).")
    if c["device"] != "cuda":
        lines.append("On CPU the targets are informational: they are stated for GPUs.")
    lines += [""] + training_table(doc["training"])
    for s in doc["skipped"]:
        lines.append(f"\nSkipped {s['method']}: {s['reason']}")
    if doc["evaluation"]:
        lines += ["", f"Evaluation: first {doc['evaluation']['questions']} questions, max_new_tokens "
                      f"{doc['evaluation']['max_new_tokens']}, base model; same predictions on "
                      f"{doc['evaluation']['same_prediction']}/{doc['evaluation']['questions']}.", ""]
        lines += eval_table(doc["evaluation"])
    if doc.get("evaluation_error"):
        lines += ["", f"Evaluation failed: {doc['evaluation_error']}"]
    if doc["suite"]:
        lines += [""] + suite_lines(doc["suite"])
    return "\n".join(lines) + "\n"


def write(doc: dict, stem: Path) -> tuple[Path, Path]:
    """JSON then Markdown, each atomically (temp file, fsync, rename)."""
    json_path, md_path = with_suffix(stem, ".json"), with_suffix(stem, ".md")
    atomic.write_json(json_path, doc)
    atomic.write_text(md_path, markdown(doc))
    return json_path, md_path
