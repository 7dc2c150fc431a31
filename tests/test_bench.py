"""`make bench` on the tiny random model: every output field is there and every ratio is computed.
Speedups are not asserted: on a CPU with a tiny model the harness need not be 2x faster."""
from __future__ import annotations

import json
import math

import pytest
import torch

from harness.bench import cli, report

METHOD_ROW_KEYS = {"method", "status", "error", "method_config", "plain", "harness", "speedup", "memory_ratio",
                   "same_tokens", "flags"}
SIDE_KEYS = {"steps", "losses", "real_tokens", "padded_tokens", "seconds", "call_seconds", "tokens_per_second",
             "peak_gib", "memory", "loss_last", "padded_fraction"}
MD_COLUMNS = ("method", "plain tok/s", "harness tok/s", "speedup", "plain peak GiB", "harness peak GiB",
              "memory ratio", "final loss", "reference q/s", "harness q/s")


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


def test_bench_compares_training_and_evaluation(bench, tmp_path):
    assert bench(tmp_path, "--methods", "lora,full", "--steps", "2", "--eval-questions", "2",
                 "--eval-max-new-tokens", "8") == 0
    doc, md = only_result(tmp_path)
    c = doc["config"]
    assert c["model"] == "tiny-random" and c["device"] == "cpu" and c["steps"] == 2
    assert c["methods"] == ["lora", "full"] and c["train_examples"] == 2 * 4
    assert c["run_config"]["train"]["cutoff_len"] == 128
    assert doc["environment"]["versions"]["torch"] and doc["environment"]["device_type"] == "cpu"
    assert [r["method"] for r in doc["training"]] == ["lora", "full"]
    for row in doc["training"]:
        assert METHOD_ROW_KEYS <= set(row) and row["status"] == "ok", row.get("error")
        for side in ("plain", "harness"):
            s = row[side]
            assert SIDE_KEYS <= set(s) and s["steps"] == 2
            assert s["tokens_per_second"] > 0 and s["peak_gib"] > 0 and math.isfinite(s["loss_last"])
            # tokens/s is over the timed steps as the loop clocks them: inside the whole call, setup excluded
            assert 0 < s["seconds"] <= s["call_seconds"]
            assert s["tokens_per_second"] == pytest.approx(s["real_tokens"] / s["seconds"], rel=1e-2)
        assert row["same_tokens"]  # same examples: the same useful tokens on both sides
        assert row["speedup"] == pytest.approx(row["harness"]["tokens_per_second"] / row["plain"]["tokens_per_second"],
                                               rel=1e-2)
        assert row["memory_ratio"] == pytest.approx(row["harness"]["peak_gib"] / row["plain"]["peak_gib"], rel=1e-2)
        # a row that misses the 2x target says so (a tiny CPU model usually does), and only then
        assert ("below 2× target" in row["flags"]) == (row["speedup"] < 2.0)
    ev = doc["evaluation"]
    assert ev["test_set"] == "gsm8k" and ev["questions"] == 2 and ev["max_new_tokens"] == 8
    for side in ("reference", "harness"):  # 2 questions: an accuracy is 0, 50 or 100
        assert ev[side]["questions_per_second"] > 0 and ev[side]["accuracy"] in (0.0, 50.0, 100.0)
    assert ev["reference"]["decoding"] == "beam4" and ev["reference"]["batch_size"] == 1
    assert ev["speedup"] == pytest.approx(ev["harness"]["questions_per_second"] / ev["reference"]["questions_per_second"],
                                          rel=1e-2)
    assert ev["accuracy_differs"] == (ev["reference"]["accuracy"] != ev["harness"]["accuracy"])
    assert doc["suite"] is None
    for column in MD_COLUMNS:
        assert column in md
    assert "| lora |" in md and "| full |" in md and "| gsm8k | 2 |" in md


def test_one_method_gives_one_row(bench, tmp_path):
    assert bench(tmp_path, "--methods", "lora", "--steps", "1", "--eval-questions", "0") == 0
    doc, md = only_result(tmp_path)
    assert [r["method"] for r in doc["training"]] == ["lora"] and doc["evaluation"] is None
    assert md.count("| lora |") == 1


def test_bad_method_exits_2_before_any_work(bench, tmp_path, capsys):
    assert bench(tmp_path / "out", "--methods", "lora,lorax") == 2
    err = capsys.readouterr().err
    assert "error: unknown method(s) ['lorax'] in --methods; choose from full,lora" in err
    assert "none" not in err.split("choose from")[1]  # the methods that train, from the registry
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["method=lora"], "--methods"),
    (["--steps", "0"], "--steps must be >= 1"),
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
