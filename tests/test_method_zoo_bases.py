"""The method zoo beyond the tiny model's float weights: a 4/8-bit base works, and matches the method
on the dequantised weights, where the registry allows one (and is refused where it does not); the
recipes' shapes fit SmolLM2-135M and the other shipped models; LoRA+'s optimizer, AdaLoRA's budget
schedule and BOFT's notes are wired as the registry says; the VRAM estimator knows every method."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from harness import methods
from harness.config.overrides import resolve_one
from harness.errors import ConfigError
from harness.pipeline import models
from method_zoo_helpers import (ALL_SPECS, CPU, QUANTIZABLE, TRAINS, UNQUANTIZABLE, build, fresh,  # noqa: F401
                                logits, method_cfg, train_steps)


# ---- quantised bases --------------------------------------------------------------------------

@pytest.mark.parametrize("name", UNQUANTIZABLE)
def test_a_quantised_base_is_refused_where_peft_does_not_support_it(name):
    with pytest.raises(ConfigError, match=f"method={name} does not run on a quantised base"):
        resolve_one(["model=tiny-random", f"method={name}", "method.quantization.bits=4"])


def test_dora_refuses_an_8bit_base():
    with pytest.raises(ConfigError, match=r"method.quantization.bits=8: method=dora takes one of \(4,\)"):
        resolve_one(["model=tiny-random", "method=dora", "method.quantization.bits=8"])


def quantised(name, work_dirs, bits: int = 4):
    """(4/8-bit tiny model, the method's config asking for that base, tokenizer)."""
    cfg = method_cfg(name, f"method.quantization.bits={bits}")
    model_cfg = method_cfg("none", section="model")
    model, tok, _ = models.load(model_cfg, cfg, CPU, torch.float32, str(work_dirs["cache"]))
    assert model.is_quantized
    return model, cfg, tok


def dequantised_copy(base, qmodel):
    """The float base with every quantised Linear's weight replaced by its dequantised 4-bit value."""
    import bitsandbytes as bnb
    fmodel = copy.deepcopy(base)
    fmods = dict(fmodel.named_modules())
    for n, m in qmodel.named_modules():
        if isinstance(m, bnb.nn.Linear4bit):
            w = bnb.functional.dequantize_4bit(m.weight.data, m.weight.quant_state).to(torch.float32)
            fmods[n].weight.data.copy_(w.reshape(fmods[n].weight.shape))
    return fmodel


@pytest.mark.parametrize("name", QUANTIZABLE)
def test_a_4bit_base_trains_and_matches_the_method_on_the_dequantised_weights(tiny, work_dirs, name):
    qmodel, cfg, tok = quantised(name, work_dirs)
    fmodel = dequantised_copy(tiny[0], qmodel)
    qm = build(name, qmodel, tok, cfg=cfg).model
    fcfg = copy.deepcopy(cfg)
    with open_dict(fcfg):
        fcfg.quantization.bits = 0
    fm = build(name, fmodel, tok, cfg=fcfg).model
    # the same (perturbed) method weights on both, so the comparison is not of initialisations
    with torch.no_grad():
        fparams = dict(fm.named_parameters())
        for n, p in qm.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
                fparams[n].copy_(p)
    if name != "olora":  # OLoRA requantises its residual: not the dequantised weights any more
        assert torch.allclose(logits(qm, tok), logits(fm, tok), atol=1e-4, rtol=1e-4)
    trainable = {n for n, p in qm.named_parameters() if p.requires_grad}
    assert train_steps(name, qm, tok) == trainable  # every method weight learns on the quantised base


# peft wraps an 8-bit Linear in a layer of its own per tuner (LoRA's, which rsLoRA, OLoRA and LoRA+
# share; VeRA's, AdaLoRA's, IA3's, OFT's, BOFT's) and the prompt-learning methods and LN tuning leave it
# as it is. The quick suite trains four kinds; CI (`slow`) every method, as the 4-bit test above does
# in both suites
QUICK_8BIT = {"lora", "ia3", "adalora", "prompt_tuning"}


@pytest.mark.parametrize("name", [n if n in QUICK_8BIT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in QUANTIZABLE if 8 in ALL_SPECS[n].quantization_bits])
def test_an_8bit_base_trains(work_dirs, name):
    qmodel, cfg, tok = quantised(name, work_dirs, bits=8)
    qm = build(name, qmodel, tok, cfg=cfg).model
    trainable = {n for n, p in qm.named_parameters() if p.requires_grad}
    assert train_steps(name, qm, tok) == trainable


# ---- method-specific wiring ---------------------------------------------------------------------

def test_lora_plus_gives_b_a_larger_learning_rate(fresh):
    model, tok = fresh
    pm = build("lora_plus", model, tok).model
    # what harness.pipeline.train hands Trainer as its optimizer
    opt = methods.get("lora_plus").optimizer(pm, 1e-4, 0.0, method_cfg("lora_plus"))
    names = {id(p): n for n, p in pm.named_parameters()}
    lr_of = {names[id(p)]: g["lr"] for g in opt.param_groups for p in g["params"]}
    assert set(lr_of) == {n for n, p in pm.named_parameters() if p.requires_grad}
    assert {v for k, v in lr_of.items() if "lora_A" in k} == {1e-4}
    assert [v for k, v in lr_of.items() if "lora_B" in k] == pytest.approx([16e-4] * 10)  # 2 layers x 5 targets


def test_lora_plus_refuses_an_unknown_optimizer_argument(fresh):
    model, tok = fresh
    cfg = method_cfg("lora_plus", "method.optimizer.loraplus_ratio=4")
    with pytest.raises(ConfigError, match="loraplus_ratio is not an argument of peft's create_loraplus_optimizer"):
        build("lora_plus", model, tok, cfg=cfg)


def test_adalora_schedule_spans_the_run_and_allocates_the_budget(fresh):
    model, tok = fresh
    prepared = build("adalora", model, tok, steps=2)
    pm = prepared.model
    config = pm.peft_config["default"]
    assert config.total_step == 2 and prepared.notes["adalora_total_step"] == 2  # not the YAML's placeholder
    assert not config.rank_pattern
    train_steps("adalora", pm, tok, n=2)
    assert config.rank_pattern  # the final allocation happened at the run's last step
    kept = sum(int(sum(v)) for v in config.rank_pattern.values())
    assert kept == config.target_r * len(config.rank_pattern)  # the budget: target_r per matrix on average


def test_adalora_refuses_a_schedule_longer_than_the_run(fresh):
    model, tok = fresh
    cfg = method_cfg("adalora", "method.peft.tinit=2", "method.peft.tfinal=1")
    with pytest.raises(ConfigError, match="rank budget needs a phase"):
        build("adalora", model, tok, steps=3, cfg=cfg)


def test_boft_says_how_many_butterfly_factors_ran(fresh):
    model, tok = fresh
    notes = build("boft", model, tok).notes
    assert notes["boft_butterfly_factor"] in (1, 2) and isinstance(notes["boft_cuda_extension"], bool)
    if not notes["boft_cuda_extension"]:
        assert notes["boft_butterfly_factor"] == 1  # peft's CPU fallback


def test_vram_estimator_knows_every_method():
    """An estimate, or a ConfigError saying why not: never a silent default."""
    from harness.vram import predict_peak_gib
    from harness.vram.compose import compose_run_config
    from harness.vram.inputs import NOT_MODELLED, modelled_kind
    for name, spec in ALL_SPECS.items():
        cfg = {**compose_run_config(["model=llama-7b", f"method={name}"]), "device": "cuda"}
        if modelled_kind(spec) is None:
            assert spec.peft_config in NOT_MODELLED, name
            with pytest.raises(ConfigError, match=f"method {name} is not modelled by the VRAM estimator: .+"):
                predict_peak_gib(cfg)
        else:
            assert predict_peak_gib(cfg)["predicted_peak_gib"] > 0


# ---- other shapes -------------------------------------------------------------------------------

def _widths(config_file: str) -> tuple[int, int]:
    import json
    cfg = json.loads((Path(__file__).resolve().parents[1] / "harness" / "model_configs" / config_file).read_text())
    cfg = cfg.get("text_config", cfg)
    return cfg["hidden_size"], cfg["intermediate_size"]


@pytest.mark.parametrize("config_file", ["smollm2-135m.json", "llama-7b.json", "llama-13b.json", "llama-3.2-1b.json",
                                         "qwen2.5-0.5b.json", "gemma3-270m.json"])
def test_oft_and_boft_block_sizes_divide_the_shipped_models_widths(config_file):
    """OFT/BOFT rotate each target's input: q,k,v,up read the hidden size, down the intermediate size.
    peft would silently change an OFT block size that does not divide them (and BOFT would refuse)."""
    oft, boft = method_cfg("oft").peft, method_cfg("boft").peft
    boft_span = boft.boft_block_size * 2 ** (boft.boft_n_butterfly_factor - 1)
    for width in _widths(config_file):
        assert width % oft.oft_block_size == 0 and width % boft_span == 0, width


@pytest.mark.parametrize("name", [n for n in TRAINS if not n.startswith("qlora")])
def test_every_method_builds_and_trains_on_a_smollm2_shaped_layer(tok_only, name):
    """One SmolLM2-135M decoder layer (hidden 576, intermediate 1536, 9 heads of 64, 3 KV heads): the
    recipes' shapes (block sizes, VeRA's shared matrices, prefixes for grouped KV heads) work there."""
    import warnings

    from transformers import LlamaConfig, LlamaForCausalLM
    hidden, inter = _widths("smollm2-135m.json")
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=300, hidden_size=hidden, intermediate_size=inter,
                                         num_hidden_layers=1, num_attention_heads=9, num_key_value_heads=3)).eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = build(name, model, tok_only).model
    assert not [w for w in caught if "Adjusted" in str(w.message)], [str(w.message) for w in caught]
    ids = torch.randint(4, 300, (2, 12))
    pm.train()
    pm(input_ids=ids, labels=ids).loss.backward()
    assert all(p.grad is not None for p in pm.parameters() if p.requires_grad)


@pytest.fixture
def tok_only(tiny):
    return tiny[1]


@pytest.mark.parametrize("name", [n for n, s in ALL_SPECS.items() if s.peft_config == "LoraConfig"
                                  and n not in ("lora", "dora", "qlora4", "qlora8")])
def test_lora_config_variants_save_what_the_lora_formula_says(name):
    """The estimator models every LoraConfig method as LoRA: check the activation formula against the
    tensors autograd saves for these variants too (bf16 autocast on CPU, padded batch), as
    tests/test_vram.py does for LoRA."""
    from test_vram import TINY, _saved_bytes, expected_saved_bytes
    from transformers import LlamaConfig, LlamaForCausalLM

    from harness.vram.compose import compose_run_config
    from harness.vram.inputs import modelled_kind, setup_from_config
    assert modelled_kind(ALL_SPECS[name]) == "lora"
    run = compose_run_config([f"method={name}", "device=cuda", "train.fused_loss=torch"])
    batch_, seq = 3, 40
    run["train"].update(micro_batch_size=batch_, batch_size=batch_, cutoff_len=seq)
    hf = LlamaConfig(**TINY, num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(hf).to(torch.bfloat16)
    model = build(name, model, None, cfg=method_cfg(name)).model
    model.train()
    got, _ = _saved_bytes(model, batch_, seq)
    expected, _ = expected_saved_bytes(hf, setup_from_config(run), batch_)
    assert expected == pytest.approx(got, rel=0.03)
