"""`make bench`: the harness against the code people write today, in one process, same work.

Training: for every method, a plain transformers+peft loop (pad every example to cutoff_len, no
length grouping, HF mean loss per micro-batch / accumulation, unfused AdamW, standard loss, KV
cache left on) against `harness.train.train`, on the same examples, optimizer steps, batch and
sequence length, each side with a freshly built model. Evaluation: LLM-Adapters' evaluate.py
(one prompt at a time, 4 beams) against `harness.evaluate` (batched greedy, length-sorted, KV cache)
on the same questions. Results: results/bench/<device>-<model>-<timestamp>.{json,md}.

Modules: cli (arguments, settings, orchestration), plain (the baseline loop), training (one
method's comparison), evaluation (reference vs harness decoding, optional 15-set suite), report.
"""

# The targets: README material, flagged in the table, never asserted on CPU.
TARGET_TRAIN_SPEEDUP = 2.0  # harness tokens/s >= 2x the plain loop's, for every method
TARGET_MEMORY_RATIO = 1.0  # with peak memory no higher
TARGET_SUITE_SECONDS = 300.0  # the whole 15-set evaluation of smollm2-135m on one H100
