"""Does an item's score depend on its batch, and what does making it not cost? The same items of
several test sets, scored pooled (one pass over every set), set by set, in reverse order and at
batch size 1, on a real model at a given precision, two ways: harness.pipeline.evaluate's per-item forwards
(the default: nothing else shares an item's forward) and length-sorted batches across items (the
former default, `invariant=False`). Prints and writes, per scoring and way, how many items changed
their answer or scores against the pooled pass, and the pooled pass's seconds.

    python tools/eval_invariance_cost.py model=smollm2-135m [--precision bf16] [--items 24] [--out FILE]

Overrides are the runner's (model=..., model.gguf_path=..., cache_dir=..., device=...). The cost
figures in docs/tasks-and-scoring.md ("Evaluation") come from it; on a GPU it checks what the test suite's CPU runs
do not reach.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from harness import tasks
from harness.config import compose
from harness.pipeline import evaluate, measure, models

SCORINGS = {"generate": ("gsm8k", "svamp", "boolq"), "label": ("boolq", "piqa", "winogrande"),
            "cloze": ("hellaswag", "arc_challenge", "winogrande")}
KEYS = ("pred", "pred_index", "pred_norm_index", "generation", "option_scores", "option_logliks")


def answers(sets: list, predictions: dict) -> dict:
    return {(ts.name, rec["instruction"]): tuple(str(row.get(k)) for k in KEYS)
            for ts, recs in sets for rec, row in zip(recs, predictions[ts.name])}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="*")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--scorings", default=",".join(SCORINGS))
    p.add_argument("--out")
    a = p.parse_args(argv)
    cfg = compose(["method=none", *a.overrides])
    device = models.resolve_device(cfg.device)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    model, tok, _ = models.load(cfg.model, cfg.method, device, dtype, cfg.cache_dir)
    model.eval()
    known = tasks.all_test_sets()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "threads": torch.get_num_threads(), "precision": a.precision, "items_per_set": a.items,
              "batch_size": a.batch_size, "max_new_tokens": a.max_new_tokens, "scorings": {}}
    for scoring in a.scorings.split(","):
        names = SCORINGS[scoring]
        sets = [(known[n], tasks.load_test_set(known[n], cfg.cache_dir, "approx")[0][:a.items]) for n in names]
        out = report["scorings"][scoring] = {"sets": list(names), "items": sum(len(r) for _, r in sets)}
        for way, invariant in (("per_item", True), ("batched", False)):
            def run(s, bs):
                return answers(s, evaluate.evaluate_sets(model, tok, s, scoring, a.max_new_tokens, bs, 1, "paper",
                                                         device, invariant=invariant)[1])
            run(sets[:1], a.batch_size)  # warm-up (kernels, allocator), untimed
            t0 = measure.clock(device)
            pooled = run(sets, a.batch_size)
            seconds = measure.clock(device) - t0
            others = {"per_set": {k: v for s in sets for k, v in run([s], a.batch_size).items()},
                      "reversed": run([(ts, recs[::-1]) for ts, recs in reversed(sets)], a.batch_size),
                      "batch_1": run(sets, 1)}
            diff = {name: sum(pooled[k] != other[k] for k in pooled) for name, other in others.items()}
            out[way] = {"pooled_seconds": round(seconds, 3), "changed_vs_pooled": diff}
            print(f"{scoring} {way}: {len(pooled)} items, pooled pass {seconds:.2f} s; items scored differently "
                  f"from the pooled pass: {diff}", flush=True)
        out["per_item_cost"] = round(out["per_item"]["pooled_seconds"] / out["batched"]["pooled_seconds"], 2)
        print(f"{scoring}: per-item / batched time = {out['per_item_cost']}x", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
