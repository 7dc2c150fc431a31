"""End to end on the tiny random model: every method writes a valid record and predictions."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import methods
from harness.pipeline import runner

METHODS = list(methods.all_methods())  # every registered method, whatever it is


def check_record(rec, method: str) -> None:
    assert rec.status == "ok", rec.error
    assert rec.run_info.method == method
    assert set(rec.eval) == {"gsm8k", "svamp", "multiarith", "addsub", "aqua", "singleeq", "mawps"}
    for name, m in rec.eval.items():
        assert m.n == 4 and 0 <= m.accuracy <= 100
        assert 0 <= m.parse_failure_rate <= 1 and m.scoring == "generate"
        assert rec.data.test[name]["sha256"]
    p = rec.params
    assert p.total > 0 and 0 <= p.trainable <= p.total
    if method == "none":
        assert p.trainable == 0 and rec.train_info is None
    else:
        t = rec.train_info
        assert p.trainable > 0 and t.steps == 2
        assert t.throughput.padded_tokens >= t.throughput.real_tokens > 0
        assert rec.phase_memory("train").peak_rss_gib > 0
    assert rec.phase_memory("eval").peak_rss_gib > 0
    assert rec.meta_info.versions["torch"] and rec.meta_info.git_sha
    assert rec.model_info["weights_source"] == "random-init"
    f = rec.forgetting
    assert set(f.sets) == {"hellaswag", "arc_challenge", "winogrande"}
    assert {s["metric"] for s in f.sets.values()} == {"acc_norm", "acc"} and f.scoring.startswith("cloze")
    low, high = f.forgetting_avg_ci95
    assert low <= f.forgetting_avg <= high
    if method == "none":  # nothing trained: the same answers before and after, item by item
        assert f.forgetting_avg == 0 and all(s["before"] == s["after"] for s in f.sets.values())


# two methods in the quick suite; every method with SLOW=1 (and CI)
@pytest.mark.parametrize("method", [m if m in ("lora", "full") else pytest.param(m, marks=pytest.mark.slow)
                                    for m in METHODS])
def test_each_method_writes_a_valid_record(compose_run, work_dirs, method):
    rec = runner.run(compose_run(f"method={method}"))
    check_record(rec, method)
    path = work_dirs["results"] / "runs" / f"{rec.run_id}.json"
    assert json.loads(path.read_text()) == rec.to_json()  # the file is the typed record, whole
    rows = [json.loads(line) for line in (work_dirs["results"] / "predictions" / rec.run_id /
                                          "gsm8k.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert {"prompt", "generation", "response", "pred", "gold", "correct"} <= set(rows[0])
    if method not in ("none",):
        assert (work_dirs["results"] / "checkpoints" / rec.run_id).is_dir()


def test_a_label_scored_commonsense_run_writes_a_record(compose_run, tmp_path):
    """The command's own happy path (a subprocess, exit 0, a record, a quiet console) is
    test_front_door.py::test_wandb_mode_env_is_honoured_over_a_key."""
    rec = runner.run(compose_run("method=lora", "task=commonsense", "train.max_steps=1", "train.batch_size=2",
                                 "train.micro_batch_size=2", "eval.limit=2", "eval.scoring=label",
                                 "forgetting.enabled=false", results=tmp_path))
    [path] = (tmp_path / "runs").glob("*.json")
    assert json.loads(path.read_text())["run_id"] == rec.run_id
    assert rec.status == "ok" and all(m.scoring == "label" for m in rec.eval.values())
    assert rec.eval["hellaswag"].approximate is True
    # bad input's exit 2: test_bad_input.py::test_the_command_exits_2_with_one_line_and_no_traceback


def test_rerun_skips_a_complete_record(compose_run, work_dirs):
    first = runner.run(compose_run("method=none"))
    again = runner.run(compose_run("method=none"))
    assert again.run_id == first.run_id
    assert again.run_info.started == first.run_info.started  # skipped, not rerun
    forced = runner.run(compose_run("method=none", "force=true"))
    assert forced.run_id == first.run_id  # force is not part of the run id
    assert forced.run_info.started != first.run_info.started


def test_a_record_is_reused_only_by_the_code_that_made_it(compose_run, tmp_path):
    from harness.record import env
    first = runner.run(compose_run("method=none", results=tmp_path))
    assert first.code_id == env.code_identity()["code_id"]
    path = tmp_path / "runs" / f"{first.run_id}.json"
    rec = json.loads(path.read_text())
    rec["meta_info"]["code"]["code_id"] = "0123456789ab"  # as if another version of the harness made it
    path.write_text(json.dumps(rec))
    kept, reused = runner.run_or_reuse(compose_run("method=none", "reuse=any", results=tmp_path))
    assert reused and kept.code_id == "0123456789ab"
    rerun, reused = runner.run_or_reuse(compose_run("method=none", results=tmp_path))
    assert not reused and rerun.run_info.started != first.run_info.started
    assert rerun.run_id == first.run_id  # the run id stays the config's: same run, rerun by this code
    assert json.loads(path.read_text())["meta_info"]["code"]["code_id"] == env.code_identity()["code_id"]


def test_qlora4_adapters_all_learn_after_a_no_grad_forward(compose_run, work_dirs):
    """bitsandbytes on AVX512-BF16 CPUs repacks 4-bit weights at the first no-grad forward (here the
    forgetting suite runs before training); after that, LoRA layers below get no gradient, silently.
    Every LoRA B matrix starts at zero, so each must be non-zero after training."""
    from safetensors.torch import load_file
    rec = runner.run(compose_run("method=qlora4", "forgetting.enabled=true", "train.max_steps=3", "seed=7"))
    assert rec.status == "ok" and rec.forgetting.sets["hellaswag"]["items"] == 4
    weights = load_file(str(work_dirs["results"] / "checkpoints" / rec.run_id / "adapter_model.safetensors"))
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert len(lora_b) == 2 * 5  # 2 layers x q,k,v,up,down
    dead = [k for k, v in lora_b.items() if not v.abs().sum() > 0]
    assert not dead, f"LoRA matrices that never received a gradient: {dead}"


def test_a_run_predicted_not_to_fit_the_gpu_is_recorded_as_predicted_oom(compose_run, tmp_path, monkeypatch):
    """On a GPU the sweep asks the VRAM estimator first; here a 7B full fine-tune 'meets' a fake
    16 GiB GPU. Nothing is loaded: the record says predicted_oom, and vram_check=false runs it (the
    record is not reused then)."""
    import types
    import torch
    from harness.pipeline import models
    fake = types.SimpleNamespace(name="Fake GPU 16GB", total_memory=16 * 1024 ** 3, major=9, minor=0)
    monkeypatch.setattr(models, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: fake)
    monkeypatch.setattr(models, "load", lambda *a, **k: pytest.fail("a predicted OOM must not load the model"))
    cfg = compose_run("model=llama-7b", "method=full", "train.micro_batch_size=1", "train.batch_size=1")
    rec = runner.run(cfg)
    assert rec.status == "predicted_oom" and "vram_check=false runs it anyway" in rec.error
    assert rec.vram_estimate["fits"] is False and rec.vram_estimate["predicted_total_gib"] > 16
    assert runner.record.read_record(Path(cfg.results_dir) / "runs" / f"{rec.run_id}.json").status == "predicted_oom"
    assert runner.reusable_record(runner.Plan(cfg)).status == "predicted_oom"  # a rerun keeps the answer
    anyway = runner.Plan(compose_run("model=llama-7b", "method=full", "train.micro_batch_size=1",
                                     "train.batch_size=1", "vram_check=false"))
    assert anyway.run_id == rec.run_id and runner.reusable_record(anyway) is None  # ... unless asked to run it


def test_the_code_identity_covers_shipped_data_through_its_manifest():
    # the manifest holds every shipped file's sha256 and every read is checked against it, so the
    # identity hashes the manifest, not the 6 MB of data it describes
    from harness.record import env
    files = {p.relative_to(env.REPO).as_posix() for p in env.source_files()}
    assert "harness/data/manifest.json" in files and "harness/pipeline/runner.py" in files and "conf/config.yaml" in files
    assert not [f for f in files if f.endswith(".json.gz")]
    manifest = json.loads((env.REPO / "harness/data/manifest.json").read_text())
    assert all("sha256" in entry for entry in manifest["files"].values())
