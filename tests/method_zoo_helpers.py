"""Shared helpers of the method-zoo tests (tests/test_method_zoo*.py): the registry's lists, a
method's composed config, building a method on a model, training steps as harness.pipeline.train takes them."""
from __future__ import annotations

import copy

import pytest
import torch

from harness import methods
from harness.config.overrides import resolve_one

ALL_SPECS = methods.all_methods()
ALL = list(ALL_SPECS)
TRAINS = [n for n, s in ALL_SPECS.items() if s.trains]
QUANTIZABLE = [n for n, s in ALL_SPECS.items() if s.quantization == "optional"]
UNQUANTIZABLE = [n for n, s in ALL_SPECS.items() if s.quantization == "none" and s.trains]
# peft replaces the base weight by a residual at initialisation (same function, other weights)
MUTATES_BASE = {"pissa", "olora"}
# initialised to compute exactly the base model's function (up to rounding for the decompositions)
STEP0_EXACT = {"full", "lora", "rslora", "lora_plus", "qlora4", "qlora8", "adalora", "loha", "lokr", "vera", "ia3",
               "oft", "boft", "ln_tuning", "bitfit"}
STEP0_CLOSE = {"dora", "pissa", "olora"}
# not initialised to the base: virtual tokens or prefixes are random, bottleneck adapters use LLM-Adapters'
# "bert" init (tests/test_bottleneck.py covers the zero init)
STEP0_DIFFERS = {"prompt_tuning", "prefix_tuning", "p_tuning", "adapter_series", "adapter_parallel"}
PROMPT_LEARNING = ("prompt_tuning", "prefix_tuning", "p_tuning")
CPU = torch.device("cpu")
_CFGS: dict = {}


def method_cfg(name: str, *extra: str, section: str = "method"):
    """A section (the method's) of a checked tiny-random run config (cached: composition is the slow part,
    ~0.2 s a config)."""
    key = (name, *extra)
    if key not in _CFGS:
        base = [] if name == "none" else ["train.max_steps=3"]
        _CFGS[key] = resolve_one(["model=tiny-random", f"method={name}", *base, *extra])
    return copy.deepcopy(_CFGS[key][section])


def ctx(tok, steps: int = 3):
    return methods.MethodContext(tokenizer=tok, model_ref="", device=CPU, total_steps=steps)


def build(name, model, tok, steps: int = 3, cfg=None):
    torch.manual_seed(0)
    return methods.apply(model, cfg if cfg is not None else method_cfg(name), ctx(tok, steps))


def batch(tok, texts=("Below is an instruction that describes a task.", "What is 2 plus 3?", "Add 4 and 9")):
    tok.padding_side = "right"
    enc = tok(list(texts), return_tensors="pt", padding=True)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {**enc, "labels": labels}


def train_steps(name, model, tok, n: int = 2, lr: float = 1e-2) -> set[str]:
    """n optimizer steps through the harness's training engine (transformers.Trainer with the
    method's optimizer and per-step hook, as every run takes them); returns the trainable
    parameters whose values moved."""
    from omegaconf import OmegaConf

    from harness.config import TrainConfig
    from harness.pipeline.train import tokenize_examples, train
    records = [{"instruction": t, "input": "", "output": "5"} for t in ("What is 2 plus 3?", "Add 4 and 1", "Say 5")]
    examples = tokenize_examples(records, tok, 64, True, "clean")
    tcfg = OmegaConf.structured(TrainConfig(max_steps=n, batch_size=3, micro_batch_size=3, warmup_steps=0,
                                            max_grad_norm=0.0, log_every=1))
    before = {k: p.detach().float().clone() for k, p in model.named_parameters() if p.requires_grad}
    train(model, tok, examples, tcfg, lr=lr, seed=0, device=CPU, dtype=torch.float32, method_cfg=method_cfg(name))
    return {k for k, p in model.named_parameters() if k in before and not torch.equal(p.detach().float(), before[k])}


@torch.no_grad()
def logits(model, tok) -> torch.Tensor:
    model.eval()
    inputs = batch(tok)
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    return out[:, -inputs["input_ids"].shape[1]:]  # prompt tuning / p-tuning prepend virtual positions


@pytest.fixture
def fresh(tiny):  # imported by the test modules
    """A private copy of the tiny model (methods change the model they are given) and its tokenizer."""
    model, tok = tiny
    return copy.deepcopy(model), tok
