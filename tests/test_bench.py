"""`make bench` on the tiny random model: every output field is there and every ratio is computed.
Speedups are not asserted: on a CPU with a tiny model the harness need not be 2x faster."""
from __future__ import annotations

import json
import math

import pytest
import torch

from harness.bench import cli, report

ROW_KEYS = {"status", "steps", "losses", "step_seconds", "step_tokens", "tokens_per_second", "first_step_seconds",
            "timed_steps", "real_tokens", "peak_gib", "memory", "loss_mean", "precision"}
LOOPS = {"reference", "trainer_tuned", "trl_padding_free", "naive", "harness", "harness+packing",
         "harness+bf16", "harness+all"}


@pytest.fixture
def bench(work_dirs):
    """bench(out_dir, *args) -> exit status of `python -m harness.bench model=tiny-random ...`, in-process,
    single-threaded (a tiny model only loses from threads, and a busy machine makes them much slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

    def run(out, *args):
        return cli.main(["model=tiny-random", "train.cutoff_len=128", "train.batch_size=4",
                         "train.micro_batch_size=2", f"cache_dir={work_dirs['cache']}", "--out", str(out), *args])
    yield run
    torch.set_num_threads(threads)


def only_result(out):
    (js,) = out.glob("*.json")
    (md,) = out.glob("*.md")
    assert js.name.startswith("cpu-tiny-random-") and md.stem == js.stem
    return json.loads(js.read_text()), md.read_text()


@pytest.mark.slow
def test_bench_compares_training_and_evaluation(bench, tmp_path, monkeypatch):
    # the bf16 rows run where bf16 is fast (AMX / AVX512-BF16 CPUs, GPUs); here they run regardless
    monkeypatch.setattr("harness.pipeline.models.fast_bf16", lambda device: True)
    assert bench(tmp_path, "--methods", "lora,full", "--steps", "3", "--eval-questions", "2",
                 "--eval-max-new-tokens", "8", "--levers", "packing,bf16", "--cloze-items", "2") == 0
    doc, md = only_result(tmp_path)
    c = doc["config"]
    assert c["model"] == "tiny-random" and c["device"] == "cpu" and c["steps"] == 3
    assert c["methods"] == ["lora", "full"] and c["train_examples"] == 3 * 4 and c["levers"] == ["packing", "bf16"]
    assert c["run_config"]["train"]["cutoff_len"] == 128
    assert doc["environment"]["versions"]["torch"] and doc["environment"]["device_type"] == "cpu"
    for m in doc["training"]:
        rows = m["rows"]
        assert set(rows) == LOOPS, set(rows)
        for name, r in rows.items():
            assert r["status"] == "ok" and ROW_KEYS <= set(r), (name, r.get("error"))
            assert r["steps"] == 3 == len(r["losses"]) == len(r["step_seconds"]) and r["timed_steps"] == 2
            # tokens/s over the steps after the first, as each loop's own clock and token count say
            assert r["tokens_per_second"] == pytest.approx(sum(r["step_tokens"][1:]) / sum(r["step_seconds"][1:]),
                                                           rel=1e-2)
            assert r["speedup"] == pytest.approx(r["tokens_per_second"] / rows["reference"]["tokens_per_second"],
                                                 rel=1e-2)
            assert r["memory_ratio"] == pytest.approx(r["peak_gib"] / rows["reference"]["peak_gib"], rel=1e-2)
            assert r["speedup_vs_tuned"] == pytest.approx(
                r["tokens_per_second"] / rows["trainer_tuned"]["tokens_per_second"], rel=1e-2)
            assert r["real_tokens"] == rows["reference"]["real_tokens"]  # the same examples: the same real tokens
            # the same objective: every loop's mean loss is the reference Trainer's, within float noise here
            assert r["loss_mean"] == pytest.approx(rows["reference"]["loss_mean"], rel=2e-3), name
            assert not any(f.startswith("objective differs") for f in r["flags"])
        # the harness's engine is the tuned Trainer configured: the same batches and objective, so at
        # step 1 (learning rate 0 in warmup) the same loss; the reference's left padding adds targets
        assert rows["harness"]["step_tokens"] == rows["trainer_tuned"]["step_tokens"]
        assert rows["harness"]["losses"][0] == pytest.approx(rows["trainer_tuned"]["losses"][0], rel=1e-4)
        assert rows["harness+bf16"]["precision"] == "bfloat16" and rows["harness"]["precision"] == "float32"
        assert rows["harness+bf16"]["levers"]["precision"] == "bf16" and rows["harness+packing"]["levers"]["packing"]
        harness = {n: r for n, r in rows.items() if n.startswith("harness")}
        assert m["best_harness_row"] == max(harness, key=lambda n: harness[n]["speedup"])
        best = rows[m["best_harness_row"]]  # the targets judge the fastest harness configuration
        assert ("fastest harness row, below 2× the reference" in best["flags"]) == (best["speedup"] < 2.0)
        assert ("fastest harness row, below 1.3× the tuned Trainer" in best["flags"]) == (best["speedup_vs_tuned"] < 1.3)
        assert m["meets_targets"] == (best["speedup"] >= 2.0 and best["speedup_vs_tuned"] >= 1.3
                                      and best["memory_ratio"] <= 1.0 and best["memory_ratio_vs_tuned"] <= 1.0)
    ev = doc["evaluation"]
    assert ev["test_set"] == "gsm8k" and ev["questions"] == 2 and ev["max_new_tokens"] == 8
    assert set(ev["sides"]) == {"reference", "hf_batched", "harness", "harness_batched", "harness+bf16",
                                "harness_batched+bf16"}
    for side in ev["sides"].values():  # 2 questions: an accuracy is 0, 50 or 100
        assert side["questions_per_second"] > 0 and side["accuracy"] in (0.0, 50.0, 100.0)
        assert side["speedup"] == pytest.approx(
            side["questions_per_second"] / ev["sides"]["reference"]["questions_per_second"], rel=1e-2)
    assert ev["sides"]["reference"]["decoding"] == "beam4" and ev["sides"]["reference"]["batch_size"] == 1
    assert doc["suite"] is None
    cloze = doc["cloze"]  # the harness's cloze scoring against lm-eval's HFLM: same requests, same choices
    assert cloze["items"] == 2 * 8 and cloze["same_choices"] == cloze["items"]
    assert cloze["max_abs_loglik_difference"] < 1e-3 and cloze["speedup_vs_lm_eval"] > 0
    assert "lm-evaluation-harness HFLM.loglikelihood" in md
    assert "transformers.Trainer, LLM-Adapters settings" in md and "| lora |" in md and "| full |" in md
    assert "plain HF batched greedy" in md


def test_the_bf16_lever_is_not_applicable_where_bf16_is_emulated(bench, tmp_path, monkeypatch):
    monkeypatch.setattr("harness.pipeline.models.fast_bf16", lambda device: False)
    assert bench(tmp_path, "--methods", "lora", "--steps", "2", "--eval-questions", "0", "--levers", "bf16",
                 "--baselines", "reference,trainer_tuned", "--cloze-items", "0") == 0
    doc, _ = only_result(tmp_path)
    rows = doc["training"][0]["rows"]
    assert rows["harness+bf16"]["status"] == "not applicable" and "AMX" in rows["harness+bf16"]["why"]
    assert rows["trainer_tuned"]["precision"] == "float32"  # a careful user keeps fp32 on such a CPU


def test_one_method_gives_one_row(bench, tmp_path):
    assert bench(tmp_path, "--methods", "lora", "--steps", "2", "--eval-questions", "0", "--levers", "none",
                 "--baselines", "reference", "--cloze-items", "0") == 0
    doc, md = only_result(tmp_path)
    assert [r["method"] for r in doc["training"]] == ["lora"] and doc["evaluation"] is None
    assert list(doc["training"][0]["rows"]) == ["reference", "harness", "harness+all"]
    assert md.count("| lora |") == 3


@pytest.mark.slow
def test_a_bench_cut_short_is_completed_by_resume(bench, tmp_path, monkeypatch, capsys):
    """A bench killed during its second method keeps the first's rows (written after each method);
    --resume measures only what is missing and completes the same document."""
    args = ("--steps", "2", "--eval-questions", "0", "--levers", "none", "--baselines", "reference",
            "--cloze-items", "0")
    real = cli.training.compare_method

    def killed_at_bitfit(cfg, *a, **k):
        if cfg.method.name == "bitfit":
            raise KeyboardInterrupt
        return real(cfg, *a, **k)
    monkeypatch.setattr(cli.training, "compare_method", killed_at_bitfit)
    with pytest.raises(KeyboardInterrupt):
        bench(tmp_path, "--methods", "lora,bitfit", *args)
    partial, md = only_result(tmp_path)
    assert not partial["complete"] and [r["method"] for r in partial["training"]] == ["lora"] and "Partial" in md
    (path,) = tmp_path.glob("*.json")
    # other settings than the partial document's are refused before any work
    assert bench(tmp_path, "--methods", "lora,bitfit", *args[:1], "3", *args[2:], "--resume", str(path)) == 2
    assert "other settings (steps" in capsys.readouterr().err
    monkeypatch.setattr(cli.training, "compare_method", real)
    measured = []
    monkeypatch.setattr(cli.training, "compare_method", lambda cfg, *a, **k: measured.append(cfg.method.name)
                        or real(cfg, *a, **k))
    assert bench(tmp_path, "--methods", "lora,bitfit", *args, "--resume", str(path)) == 0
    doc, md = only_result(tmp_path)  # still one document: the same file, completed
    assert measured == ["bitfit"] and doc["complete"] and doc["started"] == partial["started"]
    assert [r["method"] for r in doc["training"]] == ["lora", "bitfit"] and len(doc["resumed"]) == 1
    assert doc["training"][0] == partial["training"][0] and "Partial" not in md
    assert bench(tmp_path, "--methods", "lora,bitfit", *args, "--resume", str(path)) == 2  # complete already


def test_bad_method_exits_2_before_any_work(bench, tmp_path, capsys):
    assert bench(tmp_path / "out", "--methods", "lora,lorax") == 2
    err = capsys.readouterr().err
    assert "error: unknown method(s) ['lorax'] in --methods; choose from full,lora" in err
    assert "none" not in err.split("choose from")[1]  # the methods that train, from the registry
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["method=lora"], "--methods"),
    (["--steps", "1"], "--steps must be >= 2"),
    (["--levers", "warp"], "unknown --levers ['warp']"),
    (["--baselines", "naive"], "--baselines must include reference"),
    (["--eval-set", "nope"], "unknown --eval-set"),
    (["train.batch_size=6", "train.micro_batch_size=4"], "multiple of train.micro_batch_size"),
    (["train.no_such_key=1"], "unknown key 'train.no_such_key'"),
])
def test_bad_input_exits_2(bench, tmp_path, capsys, args, message):
    assert bench(tmp_path, "--methods", "lora", *args) == 2
    assert message in capsys.readouterr().err


def test_quantised_methods_are_skipped_without_bitsandbytes(monkeypatch):
    real = cli.importlib.util.find_spec
    monkeypatch.setattr(cli.importlib.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name))
    run, skipped = cli.parse_methods(None)
    assert "qlora4" not in run and "qlora8" not in run and len(run) == len(cli.training_methods()) - 2
    assert [s["method"] for s in skipped] == ["qlora4", "qlora8"] and "bitsandbytes" in skipped[0]["reason"]


def test_output_names_keep_dotted_model_names(tmp_path):
    from datetime import datetime, timezone
    stem = report.output_stem(tmp_path, torch.device("cpu"), "qwen2.5-0.5b", datetime(2025, 1, 2, tzinfo=timezone.utc))
    assert report.with_suffix(stem, ".json").name == "cpu-qwen2.5-0.5b-20250102T000000Z.json"
