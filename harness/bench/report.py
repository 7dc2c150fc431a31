"""The bench's outputs: one JSON document and a Markdown table, written atomically side by side."""
from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

import torch

from harness.bench import TARGET_MEMORY_RATIO, TARGET_SUITE_SECONDS, TARGET_TRAIN_SPEEDUP, TARGET_TUNED_SPEEDUP
from harness.record import atomic


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


ROW_LABELS = {"reference": "reference: transformers.Trainer, LLM-Adapters settings",
              "trainer_tuned": "Trainer, a careful user's flags", "trl_padding_free": "TRL SFTTrainer, padding-free",
              "naive": "naive loop (pads to cutoff_len)", "harness": "harness (as a run configures it)",
              "harness+packing": "harness + packing", "harness+bf16": "harness + bf16",
              "harness+fused_optimizer": "harness + fused AdamW", "harness+compile": "harness + torch.compile",
              "harness+all": "harness, every lever but compile"}


def training_table(rows: list[dict]) -> list[str]:
    lines = ["| method | loop | tokens/s | × reference | × tuned Trainer | peak GiB | memory × reference "
             "| memory × tuned | first step s | mean loss | flags |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for m in rows:
        for name, r in m["rows"].items():
            label = ROW_LABELS.get(name, name)
            if r["status"] != "ok":
                lines.append(f"| {m['method']} | {label} | — | — | — | — | — | — | — | — | {r['status']}: "
                             f"{(r.get('error') or r.get('why') or '')[:140]} |")
                continue
            lines.append(f"| {m['method']} | {label} | {_num(r['tokens_per_second'])} "
                         f"| {_num(r.get('speedup'), '{:.2f}×')} | {_num(r.get('speedup_vs_tuned'), '{:.2f}×')} "
                         f"| {_num(r['peak_gib'], '{:.3f}')} | {_num(r.get('memory_ratio'), '{:.2f}')} "
                         f"| {_num(r.get('memory_ratio_vs_tuned'), '{:.2f}')} | {_num(r['first_step_seconds'], '{:.2f}')} "
                         f"| {_num(r['loss_mean'], '{:.4f}')} | {'; '.join(r.get('flags') or []) or ''} |")
    return lines


EVAL_LABELS = {"reference": "reference: LLM-Adapters evaluate.py (batch 1, 4 beams)",
               "hf_batched": "plain HF batched greedy", "harness": "harness, per item (batch-invariant, as runs do)",
               "harness_batched": "harness, length-sorted batches (eval.batch_invariant=false)",
               "harness+bf16": "harness in bf16, per item", "harness_batched+bf16": "harness in bf16, batched"}


def eval_table(ev: dict) -> list[str]:
    lines = ["| decoding | batch | questions/s | × reference | accuracy | same answers as reference | peak GiB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, side in ev["sides"].items():
        lines.append(f"| {EVAL_LABELS.get(name, name)} | {side['batch_size']} | {side['questions_per_second']:.3f} "
                     f"| {side['speedup']:.2f}× | {side['accuracy']:.1f}% "
                     f"| {side['same_predictions_as_reference']}/{ev['questions']} | {_num(side['peak_gib'], '{:.3f}')} |")
    return lines


def cloze_lines(c: dict) -> list[str]:
    head = (f"Cloze scoring (log-likelihood of each option, as lm-eval scores multiple choice): {c['items']} items, "
            f"{c['requests']} requests over the 8 commonsense sets, base model, same weights and batch size.")
    if "lm_eval_hflm" not in c["sides"]:
        return [head, "", f"lm-eval's HFLM {c['lm_eval']}; harness {c['sides']['harness']['requests_per_second']:.1f} "
                          f"requests/s."]
    lines = [head, "", "| scorer | requests/s | seconds | peak GiB |", "|---|---:|---:|---:|"]
    for name, label in (("lm_eval_hflm", "lm-evaluation-harness HFLM.loglikelihood"),
                        ("harness", "harness, length-sorted batches"),
                        ("harness_per_item", "harness, per item (batch-invariant, as runs do)")):
        if name not in c["sides"]:
            continue
        side = c["sides"][name]
        lines.append(f"| {label} | {side['requests_per_second']:.1f} | {side['seconds']:.2f} | {_num(side['peak_gib'], '{:.3f}')} |")
    lines += ["", f"Harness (batched) {c['speedup_vs_lm_eval']:.2f}× lm-eval; the same acc and acc_norm choice on "
                  f"{c['same_choices']}/{c['items']} items; largest log-likelihood difference "
                  f"{c['max_abs_loglik_difference']:.2g}."]
    return lines


def suite_lines(s: dict) -> list[str]:
    verdict = ("meets target" if s["meets_target"] else f"over the {TARGET_SUITE_SECONDS:g} s target"
               ) if s["complete"] else "eval.limit set: not the whole suite, target not judged"
    return [f"Harness evaluation of all {s['test_sets']} test sets: {s['questions']} questions in "
            f"{s['seconds']:.1f} s ({s['questions_per_second']:.1f} q/s) — {verdict}."]


def markdown(doc: dict) -> str:
    c = doc["config"]
    t = c["run_config"]["train"]
    met = [m["method"] for m in doc["training"] if m.get("meets_targets")]
    lines = [f"# peft-bench: {c['model']} on {doc['environment'].get('device_name')} ({c['device']})", "",
             f"Training: {c['steps']} optimizer steps per loop on the same {c['train_examples']} examples, "
             f"batch {t['batch_size']}, micro-batch {t['micro_batch_size']}, cutoff_len {t['cutoff_len']}, the same "
             f"learning-rate schedule; every loop on a freshly built model. tokens/s counts real (non-pad) tokens "
             f"over the steps after the first (the first pays one-off costs on every side: its seconds are shown); "
             f"peak memory is {'CUDA peak allocated' if c['device'] == 'cuda' else 'peak RSS'} over the loop. "
             f"Ratios are against the reference (transformers.Trainer with LLM-Adapters' settings) and the tuned "
             f"Trainer (every flag a careful user sets here). Targets, on each method's fastest harness row: "
             f"≥ {TARGET_TRAIN_SPEEDUP:g}× the reference's tokens/s and ≥ {TARGET_TUNED_SPEEDUP:g}× the tuned "
             f"Trainer's, at ≤ {TARGET_MEMORY_RATIO:g}× the peak memory of either; met by {', '.join(met) or 'no method'} of "
             f"{len(doc['training'])}. A row whose mean loss over the steps differs from the tuned Trainer's by more than "
             f"3% is flagged (a different objective, or losses averaged differently over a step's micro-batches); the "
             f"reference trains with LLM-Adapters' left padding, which makes each padded row's first token a target "
             f"(its loss runs a few percent higher)."]
    if not doc.get("complete", True):
        lines += ["", f"**Partial**: the bench stopped after {len(doc['training'])} of {len(c['methods'])} methods "
                      f"(this file was written after each method); no evaluation comparison."]
    lines += [""] + training_table(doc["training"])
    for s in doc["skipped"]:
        lines.append(f"\nSkipped {s['method']}: {s['reason']}")
    if doc["evaluation"]:
        lines += ["", f"Evaluation: the first {doc['evaluation']['questions']} {doc['evaluation']['test_set']} "
                      f"questions, max_new_tokens {doc['evaluation']['max_new_tokens']}, base model, answers "
                      f"extracted as LLM-Adapters does.", ""]
        lines += eval_table(doc["evaluation"])
    if doc.get("evaluation_error"):
        lines += ["", f"Evaluation failed: {doc['evaluation_error']}"]
    if doc.get("cloze"):
        lines += [""] + cloze_lines(doc["cloze"])
    if doc["suite"]:
        lines += [""] + suite_lines(doc["suite"])
    return "\n".join(lines) + "\n"


def write(doc: dict, stem: Path) -> tuple[Path, Path]:
    """JSON then Markdown, each atomically (temp file, fsync, rename)."""
    json_path, md_path = with_suffix(stem, ".json"), with_suffix(stem, ".md")
    atomic.write_json(json_path, doc)
    atomic.write_text(md_path, markdown(doc))
    return json_path, md_path
