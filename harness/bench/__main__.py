"""python -m harness.bench [key=value ...] [--methods lora,full] [--steps N] [--eval-questions N] [--out DIR]"""
import os

from harness.bench.cli import main

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
