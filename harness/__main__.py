"""python -m harness method=lora model=smollm2-135m task=arithmetic [key=value ...] [-m for sweeps]"""
from __future__ import annotations

import os
import sys

import hydra

from harness.config import CONF_DIR, register_configs, rewrite_model_argument
from harness.errors import HarnessError

register_configs()
sys.argv[1:] = rewrite_model_argument(sys.argv[1:], {p.stem for p in (CONF_DIR / "model").glob("*.yaml")})


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg) -> None:
    from harness import runner
    try:
        rec = runner.run(cfg)
    except HarnessError as exc:  # bad input: one message naming the fix, no traceback, exit 2
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # what the sweep summary shows for this run
    return {"run_id": rec["run_id"], "status": rec["status"], "error": rec.get("error"),
            "avg_all": (rec.get("summary") or {}).get("avg_all"), "skipped": rec.get("_skipped", False)}


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
