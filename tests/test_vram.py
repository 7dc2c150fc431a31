"""VRAM estimator (harness/vram): arithmetic, orderings, CLI, validation, and the activation formula
against the tensors autograd really saves. Offline and CPU-only."""
from __future__ import annotations

import dataclasses
import gc
import json
import math
import weakref

import pytest
import torch

from harness.errors import ConfigError
from harness.vram import COMPONENTS, estimate, predict_peak_gib
from harness.vram import activations as A
from harness.vram import params as P
from harness.vram.architecture import Linear, model_shape, shape_of
from harness.vram.cli import main
from harness.vram.compose import compose_run_config
from harness.vram.inputs import dtypes, setup_from_config
from harness.vram.report import rounded_parts
from harness.vram.table import REFERENCE_GB, ROWS, SIZES

_CACHE: dict = {}


def cfg(*overrides: str) -> dict:
    """Composed run config (cached: Hydra composition is the slow part of these tests)."""
    key = tuple(overrides)
    if key not in _CACHE:
        _CACHE[key] = compose_run_config(list(overrides))
    return json.loads(json.dumps(_CACHE[key]))


def peak(*overrides: str) -> dict:
    return predict_peak_gib(cfg("device=cuda", *overrides))


# --- parameter counts from configs on the meta device ---------------------------------------------

@pytest.mark.parametrize("model, expected", [
    ("llama-7b", 6_738_415_616),
    ("smollm2-135m", 134_515_008),  # tied embeddings counted once
    ("qwen2.5-0.5b", 494_032_768),
    ("llama-3.2-1b", 1_235_814_400),
])
def test_parameter_counts_match_published_totals(model, expected):
    assert model_shape(cfg(f"model={model}")["model"]).total_params == expected


def test_shipped_configs_cover_every_model_group_and_the_table():
    for model in ("smollm2-135m", "gemma3-270m", "tiny-random", "llama-7b", "llama-13b", "llama-3.2-1b",
                  "qwen2.5-0.5b"):
        assert model_shape(cfg(f"model={model}")["model"]).layers > 0
    billions = [model_shape({"config_file": f}).total_params / 1e9 for _, f in SIZES]
    assert [round(b) for b in billions] == [7, 13, 33, 69, 111]


# --- arithmetic ------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["full", "lora", "dora", "qlora4", "qlora8", "adapter_series",
                                    "adapter_parallel", "prompt_tuning", "bitfit", "none"])
def test_breakdown_adds_up_to_the_total(method):
    d = peak("model=llama-7b", f"method={method}")
    assert set(d["breakdown"]) == set(COMPONENTS)
    assert math.isclose(sum(d["breakdown"].values()), d["predicted_peak_gib"], rel_tol=1e-12)
    assert d["predicted_total_gib"] > d["predicted_peak_gib"]  # + context and fragmentation
    for component in ("weights", "activations"):
        detail = d["details"].get(component)
        if detail:
            assert math.isclose(sum(detail.values()), d["breakdown"][component], rel_tol=1e-9)
    assert all(v >= 0 for v in d["breakdown"].values())


def test_printed_parts_add_up_to_the_printed_total():
    parts = rounded_parts({"a": 1.006, "b": 2.004, "c": 0.333, "d": -0.011})
    assert round(sum(parts.values()), 2) == round(1.006 + 2.004 + 0.333 - 0.011, 2)


@pytest.mark.parametrize("method", ["full", "lora", "qlora4", "adapter_series", "prompt_tuning"])
def test_monotone_in_micro_batch_and_sequence_length(method):
    by_batch = [peak("model=llama-7b", f"method={method}", f"train.micro_batch_size={b}", "train.batch_size=16")
                ["predicted_peak_gib"] for b in (1, 2, 4, 8)]
    by_len = [peak("model=llama-7b", f"method={method}", f"train.cutoff_len={n}")["predicted_peak_gib"]
              for n in (64, 128, 256, 512, 1024)]
    assert by_batch == sorted(by_batch) and len(set(by_batch)) == len(by_batch)
    assert by_len == sorted(by_len) and len(set(by_len)) == len(by_len)


def test_7b_order_qlora4_qlora8_lora_full():
    gib = {m: peak("model=llama-7b", f"method={m}", "train.micro_batch_size=1", "train.batch_size=1")
           ["predicted_peak_gib"] for m in ("qlora4", "qlora8", "lora", "full")}
    assert gib["qlora4"] < gib["qlora8"] < gib["lora"] < gib["full"]


def test_small_model_is_dominated_by_activations_and_logits():
    # 135M: no method ordering is asserted; weights are a small part of the peak
    b = peak("model=smollm2-135m", "method=lora")["breakdown"]
    assert b["activations"] + b["logits_and_loss"] + b["kv_cache"] > b["weights"]


def test_gradient_checkpointing_lowers_activations():
    for method in ("full", "lora", "qlora4"):
        off = peak("model=llama-7b", f"method={method}")["breakdown"]
        on = peak("model=llama-7b", f"method={method}", "train.gradient_checkpointing=true")["breakdown"]
        assert on["activations"] < off["activations"] / 3
        assert on["kv_cache"] == 0  # HF turns use_cache off under checkpointing


def test_liger_fused_loss_lowers_logits_memory():
    torch_loss = peak("model=llama-3.2-1b", "method=lora", "train.fused_loss=torch")
    liger = peak("model=llama-3.2-1b", "method=lora", "train.fused_loss=liger")
    assert liger["breakdown"]["logits_and_loss"] < torch_loss["breakdown"]["logits_and_loss"] / 5
    assert liger["predicted_peak_gib"] < torch_loss["predicted_peak_gib"]


def test_quantised_weight_bytes():
    lin = Linear("q", 4096, 4096, False)
    values, consts = P.nf4_bytes(lin, double_quant=True)
    blocks = 4096 * 4096 // 64
    assert values == 4096 * 4096 // 2
    assert consts == blocks * 1 + math.ceil(blocks / 256) * 4 + 256 * 4 + 4
    assert P.nf4_bytes(lin, double_quant=False)[1] == blocks * 4
    assert P.int8_bytes(lin) == (4096 * 4096, 4096 * 4)


def test_optimizer_choices():
    adamw = peak("model=llama-7b", "method=full")["breakdown"]["optimizer_states"]
    d = predict_peak_gib(cfg("device=cuda", "model=llama-7b", "method=full"), optim="adamw8bit")
    assert d["breakdown"]["optimizer_states"] < adamw * 0.3  # 1 byte per state instead of 4 (fp32 masters)
    assert adamw == pytest.approx(2 * 4 * 6_738_415_616 / 2 ** 30)  # two fp32 states of fp32 master weights


def test_full_finetuning_is_eighteen_bytes_per_param_plus_activations():
    """fp32 master weights (4), fp32 gradients (4), two fp32 AdamW states (8), and the bf16 copies
    autocast makes of the weights for the forward (2): transformers' Trainer with bf16=True."""
    b = peak("model=llama-7b", "method=full")["breakdown"]
    n = 6_738_415_616 / 2 ** 30
    assert b["weights"] + b["gradients"] + b["optimizer_states"] == pytest.approx(16 * n)
    linear = 6_738_415_616 - 32000 * 4096 - 65 * 4096  # every weight but the input embedding and the norms
    assert b["autocast_weight_copies"] == pytest.approx(2 * linear / 2 ** 30, rel=1e-3)


def test_prompt_tuning_lengthens_the_sequence():
    d = peak("model=llama-7b", "method=prompt_tuning", "train.cutoff_len=256")
    assert d["setup"]["seq_len"] == 256 + 20


def test_fits_against_device_memory():
    c = cfg("device=cuda", "model=llama-7b", "method=lora")
    assert predict_peak_gib(c)["fits"] is None
    assert predict_peak_gib(c, 80.0)["fits"] is True
    assert predict_peak_gib(c, 12.0)["fits"] is False
    assert predict_peak_gib(cfg("device=cuda", "model=llama-7b", "method=full"), 80.0)["fits"] is False  # ~130 GB


def test_a_batch_the_runner_refuses_is_refused_by_the_estimator_too():
    with pytest.raises(ConfigError, match="multiple of train.micro_batch_size"):
        cfg("model=llama-7b", "method=qlora4", "train.batch_size=2")


# --- errors ----------------------------------------------------------------------------------------

def test_unknown_config_file_is_a_config_error():
    c = cfg("model=llama-7b", "model.config_file=no-such-model.json")
    with pytest.raises(ConfigError, match="no-such-model.json"):
        predict_peak_gib(c)


def test_hub_model_without_config_file_offline_names_the_fix(monkeypatch):
    import transformers

    def unreachable(ref, **kwargs):  # the hub cannot be reached (and the id is not cached)
        raise OSError(f"cannot reach the hub for {ref}")
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", unreachable)
    c = cfg("model=llama-7b", "model.config_file=null", "model.name_or_path=someone/not-cached-model")
    with pytest.raises(ConfigError, match="model.config_file"):
        predict_peak_gib(c)


def test_local_directory_config_is_read_offline(tmp_path):
    (tmp_path / "config.json").write_text((model_shape.__globals__["CONFIG_DIR"] / "qwen2.5-0.5b.json").read_text())
    c = cfg("model=llama-7b", "model.config_file=null", f"model.name_or_path={tmp_path}")
    assert predict_peak_gib(c)["params"]["total"] == 494_032_768


def test_cli_bad_input_exits_2_with_one_line(capsys):
    assert main(["model=no-such-group"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# --- CLI -------------------------------------------------------------------------------------------

def test_cli_single_estimate_text_and_json(capsys):
    assert main(["model=llama-7b", "method=qlora4", "train.batch_size=4", "train.cutoff_len=512", "device=cuda"]) == 0
    out = capsys.readouterr().out
    assert "batch per forward = micro_batch_size=4" in out and "predicted peak allocated" in out
    assert main(["model=tiny-random", "method=lora", "--json", "--device-memory-gib", "8"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fits"] is True and d["predicted_peak_gib"] > 0


def test_table_prints_four_rows_by_five_sizes(capsys):
    assert main(["--table"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "/" in line]
    assert [r.split("|")[1].strip() for r in rows] == [label for label, _ in ROWS]
    for (label, method), row in zip(ROWS, rows):
        cells = [c.strip() for c in row.split("|")[2:-1]]
        assert len(cells) == len(SIZES)
        assert [int(c.split("/")[1].split("(")[0]) for c in cells] == list(REFERENCE_GB[method])
    assert "batch 1 per forward, sequence 512 tokens" in out


# --- validation against measured records -----------------------------------------------------------

def _fixture_record(peak_gib: float, method: str = "lora") -> dict:
    """A FABRICATED record for tests (not a measurement): the shape the runner writes on CUDA."""
    return {"schema": 1, "run_id": f"fixture__{method}", "status": "ok",
            "run_info": {"config": cfg("model=llama-3.2-1b", f"method={method}")},
            "meta_info": {"device_type": "cuda", "device_name": "FIXTURE GPU", "device_memory_gib": 79.1},
            "train_info": {"fused_loss": "torch"},
            "memory": {"train": {"peak_allocated_gib": peak_gib, "peak_reserved_gib": peak_gib * 1.1}}}


def test_validate_without_cuda_records(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    cpu = _fixture_record(1.0)
    cpu["meta_info"]["device_type"] = "cpu"
    (tmp_path / "runs" / "cpu.json").write_text(json.dumps(cpu))
    assert main(["--validate", "--results", str(tmp_path), "--strict"]) == 0
    assert "no CUDA records in" in capsys.readouterr().out


def test_validate_compares_fixture_records(tmp_path, capsys):
    runs = tmp_path / "runs"
    runs.mkdir()
    predicted = predict_peak_gib({**cfg("model=llama-3.2-1b", "method=lora"), "device": "cuda"})["predicted_peak_gib"]
    (runs / "close.json").write_text(json.dumps(_fixture_record(predicted * 1.02)))
    assert main(["--validate", "--results", str(tmp_path), "--strict"]) == 0
    out = capsys.readouterr().out
    assert "fixture__lora" in out and "-2.0%" in out
    (runs / "far.json").write_text(json.dumps(_fixture_record(predicted * 2, "qlora4")))
    (runs / "partial.json").write_text("{not json")
    assert main(["--validate", "--results", str(tmp_path)]) == 0
    assert main(["--validate", "--results", str(tmp_path), "--strict"]) == 1
    capsys.readouterr()
    assert main(["--validate", "--results", str(tmp_path), "--json"]) == 0
    records = json.loads(capsys.readouterr().out)["records"]
    assert sorted(r["run_id"] for r in records) == ["fixture__lora", "fixture__qlora4"]
    assert [abs(r["error_pct"]) > 10 for r in sorted(records, key=lambda r: r["run_id"])] == [False, True]


# --- the activation formula against autograd's saved tensors ---------------------------------------

TINY = dict(vocab_size=300, hidden_size=192, intermediate_size=512, num_hidden_layers=3)
ARCHS = {
    "llama": dict(model_type="llama", num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=False),
    "gemma3_text": dict(model_type="gemma3_text", num_attention_heads=4, num_key_value_heads=1, head_dim=64),
}


def expected_saved_bytes(hf, s, batch: int) -> tuple[float, float]:
    """(bytes autograd saves, bytes of the KV cache kept) for one forward of `batch` sequences, as the
    estimator's formulas give them (on CPU, dropout keeps fp32 noise where CUDA keeps a bool mask)."""
    dt = dataclasses.replace(dtypes(s), dropout_mask=4)
    shape = shape_of(hf)
    tokens = batch * s.seq_len
    layer = A.layer_bytes_per_token(shape, s, dt)
    unsaved, unshared_kv = A.frozen_prefix_bytes_per_token(shape, s, dt, layer)
    bool_mask = s.seq_len if s.padded else 0  # alive during the forward, but nothing saves it
    saved = (tokens * (shape.layers * sum(layer.values()) + A.head_bytes_per_token(shape, s, dt) - bool_mask - unsaved)
             + tokens * 4 * shape.vocab  # the fp32 log-softmax cross-entropy keeps
             + P.dora_weight_copy_bytes(shape, s)[0])
    kv_extra, _ = A.kv_cache_bytes_per_token(shape, s, dt)
    return saved, tokens * (shape.layers * kv_extra + unshared_kv)


def _saved_bytes(model, batch: int, seq: int) -> tuple[int, int]:
    """Bytes of the tensors autograd keeps for backward after a forward (bf16 autocast on CPU, as the
    harness runs on CUDA), and of the KV cache beyond them. Not counted: parameters, and autocast's
    bf16 copies of fp32 trainable weights (the estimate counts all of them separately: all are
    alive until the forward leaves autocast, but only some are saved)."""
    ids = torch.randint(0, TINY["vocab_size"], (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    if batch > 1:
        mask[0, -3:] = 0
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    fp32_trainable = {shape for p in model.parameters() if p.requires_grad and p.dtype == torch.float32
                      for shape in (tuple(p.shape), tuple(p.shape)[::-1])}  # linear may save the transpose
    refs = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: refs.append(weakref.ref(t)) or t, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            # as harness/pipeline/train.py calls it: no KV cache in training
            out = model(input_ids=ids, attention_mask=mask, labels=ids, use_cache=False)
    gc.collect()
    alive = {}
    for r in refs:
        t = r()
        if t is None or (t.dtype == torch.bfloat16 and tuple(t.shape) in fp32_trainable):
            continue
        if t.untyped_storage().data_ptr() not in params:
            alive[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    cache = 0
    for layer in (out.past_key_values.layers if out.past_key_values is not None else []):
        for t in (layer.keys, layer.values):
            if t.untyped_storage().data_ptr() not in alive:
                cache += t.untyped_storage().nbytes()
    return sum(alive.values()), cache


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("method", ["full", "lora", "dora", "adapter_series", "adapter_parallel_llm_adapters", "bitfit",
                                    "prompt_tuning", "adapter_series method.adapter.target_modules=[up_proj,gate_proj]",
                                    "adapter_series method.adapter.target_modules=[down_proj]"])
def test_activation_formula_matches_autograd(arch, method):
    from transformers import AutoConfig, AutoModelForCausalLM

    from harness import methods
    from harness.methods import MethodContext
    from omegaconf import OmegaConf

    spec = dict(ARCHS[arch])
    hf = AutoConfig.for_model(spec.pop("model_type"), **TINY, **spec)
    method, *placement = method.split()
    run = cfg(f"method={method}", *placement, "device=cuda", "train.fused_loss=torch")
    # batch 1: flash attention, no mask; batch 3: padding mask, memory-efficient kernel (DoRA: slow, once)
    for batch, seq in ((3, 40),) if method == "dora" else ((1, 40), (3, 40)):
        run["train"].update(micro_batch_size=batch, batch_size=batch, cutoff_len=seq)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(hf).to(torch.bfloat16)
        model = methods.apply(model, OmegaConf.create(run["method"]),
                              MethodContext(tokenizer=None, model_ref="", device=torch.device("cpu"))).model
        model.train()
        got, got_cache = _saved_bytes(model, batch, seq)

        expected, expected_cache = expected_saved_bytes(hf, setup_from_config(run), batch)
        assert expected == pytest.approx(got, rel=0.03), batch
        assert expected_cache == got_cache


def test_the_estimator_is_within_tolerance_on_the_committed_h200_records():
    """The CUDA records measured on an NVIDIA H200 (results/gpu/nvidia-h200/vram: the nine mission
    methods at micro-batch 4 and 16, cutoff_len 256, SmolLM2-135M): every method's estimate within
    the validation tolerance of its measured peak. A change to the estimator that breaks this fails."""
    from pathlib import Path

    from harness.vram import constants as C
    from harness.vram.validate import failures, validate
    rows = validate(Path(__file__).resolve().parents[1] / "results/gpu/nvidia-h200/vram")
    assert len(rows) == 18 and {r["device"] for r in rows} == {"NVIDIA H200"}
    assert {r["method"] for r in rows} == {"full", "lora", "qlora4", "qlora8", "dora", "adapter_series",
                                           "adapter_parallel", "prompt_tuning", "bitfit"}
    assert not failures(rows), [(r["method"], r.get("error_pct")) for r in failures(rows)]
    assert max(abs(r["error_pct"]) for r in rows) <= 100 * C.VALIDATION_TOLERANCE
