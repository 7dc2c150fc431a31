"""Does an item's score depend on its batch? The same items of several test sets, scored pooled
(one pass over every set, length-sorted batches), set by set, and one item at a time, on a real model
at a given precision; prints and writes how many items changed their answer, per scoring.

    python tools/batch_invariance.py model=smollm2-135m [--precision bf16] [--items 24] [--out FILE]

Overrides are the runner's (model=..., model.gguf_path=..., cache_dir=..., device=...). Used on GPU
machines (tools/gpu_validate.sh) where the test suite's CPU checks do not reach.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from harness import evaluate, models, tasks
from harness.config import compose

SCORINGS = {"generate": ("gsm8k", "svamp", "boolq"), "label": ("boolq", "piqa", "winogrande"),
            "cloze": ("hellaswag", "arc_challenge", "winogrande")}
KEYS = ("pred", "pred_index", "pred_norm_index", "generation")


def answers(predictions: dict) -> dict:
    return {(name, row["index"]): tuple(row.get(k) for k in KEYS) for name, rows in predictions.items() for row in rows}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("overrides", nargs="*")
    p.add_argument("--precision", default="bf16", choices=("bf16", "fp32"))
    p.add_argument("--items", type=int, default=24)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--scorings", default=",".join(SCORINGS), help="comma-separated (default: all)")
    p.add_argument("--out")
    a = p.parse_args(argv)
    cfg = compose(["method=none", *a.overrides])
    device = models.resolve_device(cfg.device)
    dtype = torch.bfloat16 if a.precision == "bf16" else torch.float32
    model, tok, _ = models.load(cfg.model, cfg.method, device, dtype, cfg.cache_dir)
    model.eval()
    known = tasks.all_test_sets()
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "precision": a.precision, "items_per_set": a.items, "batch_size": a.batch_size, "scorings": {}}
    for scoring, names in ((k, SCORINGS[k]) for k in a.scorings.split(",")):
        sets = [(known[n], tasks.load_test_set(known[n], cfg.cache_dir, "approx")[0][:a.items]) for n in names]
        run = (lambda s, bs: answers(evaluate.evaluate_sets(model, tok, s, scoring, a.max_new_tokens, bs, 1, "paper",
                                                               device)[1]))
        pooled = run(sets, a.batch_size)
        per_set = {k: v for s in sets for k, v in run([s], a.batch_size).items()}
        single = run(sets, 1)
        diff = {name: sum(pooled[k] != other[k] for k in pooled)
                for name, other in (("per_set", per_set), ("batch_1", single))}
        report["scorings"][scoring] = {"sets": list(names), "items": len(pooled), "changed_vs_pooled": diff}
        print(f"{scoring}: {len(pooled)} items; answers that differ from the pooled pass: {diff}", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
