"""Shared test helpers (kept minimal)."""
from __future__ import annotations

import os

import pytest

# The test models are tiny: threads only add overhead, and a busy 2-core CI machine makes a thread
# pool many times slower. Set before torch is imported; subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_finish(session):
    """Every object alive once the tests are collected (the imported torch, transformers, peft, the
    collected tests) lives to the end: freezing them keeps each gc.collect() from walking them again.
    The harness collects at each phase start (harness.pipeline.measure.release) and Trainer at the
    end of training; in a test process each full collection took ~0.28 s, ~0.6 s per trained run."""
    import gc
    gc.collect()
    gc.freeze()


@pytest.fixture
def make_tiny_llama():
    """Factory for a tiny random LlamaForCausalLM in eval mode; the same seed gives the same weights.

    Defaults: vocab 64, hidden 32, intermediate 64, 2 layers, 4 heads, 2 kv heads (bias-free).
    Keyword arguments override LlamaConfig fields (e.g. num_hidden_layers=1, attention_bias=True).
    Runs torch single-threaded while the test lasts: models this small only lose from threads, and a
    busy machine makes the thread pool many times slower.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(seed: int = 0, **overrides):
        kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
        kwargs.update(overrides)
        torch.manual_seed(seed)
        return LlamaForCausalLM(LlamaConfig(**kwargs)).eval()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield make
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def work_dirs(tmp_path_factory):
    """Results and cache directories shared by a test session (the tiny model is built once)."""
    root = tmp_path_factory.mktemp("harness")
    return {"results": root / "results", "cache": root / "cache"}


@pytest.fixture(scope="session")
def compose_run(work_dirs):
    """compose_run(*overrides) -> resolved config for a quick tiny-random run in the session dirs."""
    from harness.config.overrides import resolve_one

    def make(*overrides, results=None):
        base = ["model=tiny-random", "task=arithmetic", "train.max_steps=2", "train.batch_size=4",
                "train.micro_batch_size=2", "eval.limit=4", "eval.max_new_tokens=24", "forgetting.limit=4",
                "wandb.enabled=false", f"results_dir={results or work_dirs['results']}",
                f"cache_dir={work_dirs['cache']}"]
        if "method=none" in overrides:  # train.* keys do not apply to a run that does not train
            base = [o for o in base if not o.startswith("train.")]
        return resolve_one(base + list(overrides))
    return make


@pytest.fixture(scope="session")
def tiny(work_dirs):
    """(model, tokenizer) of the tiny random LLaMA used by the harness, fp32 on CPU."""
    import torch
    from harness.config.overrides import resolve_one
    from harness.pipeline import models
    cfg = resolve_one(["model=tiny-random", "method=none", f"cache_dir={work_dirs['cache']}"])
    model, tok, _ = models.load(cfg.model, cfg.method, torch.device("cpu"), torch.float32, str(work_dirs["cache"]))
    return model.eval(), tok


def refused_in_process(*argv: str) -> str:
    """What `python -m harness <argv>` does with bad input, in this process: every run checked
    (harness.config.overrides.resolve; '-m' a sweep), then run (harness.pipeline.runner.run refuses bad data before
    it writes anything). Returns the message the command prints after 'error: '; fails the test when
    nothing is refused. The command's own promises (exit 2, one line, no traceback) are tested as
    subprocesses for one case per stage in test_bad_input.py."""
    from harness.config.overrides import resolve
    from harness.errors import HarnessError
    from harness.pipeline import runner
    multirun = "-m" in argv
    with pytest.raises(HarnessError) as err:
        cfgs, _, _ = resolve([a for a in argv if a != "-m"], multirun)
        for cfg in cfgs:
            runner.run(cfg)
    return str(err.value)
