"""`python -m harness.plan`: every run of a sweep from configs alone, in seconds, with memory, fit,
time and the total; the cheapest change for a run that does not fit; a run's own GPU record beside
its prediction."""
from __future__ import annotations

import json
import time

import pytest
from omegaconf import OmegaConf

from harness import plan, record
from harness.config.overrides import resolve_one


def test_the_paper_sweep_is_planned_in_seconds_with_memory_time_and_the_total(capsys):
    t0 = time.perf_counter()
    assert plan.main(["sweep=paper", "--gpu", "H100-80GB"]) == 0
    took = time.perf_counter() - t0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip().startswith("llama-7b x ")]
    assert len(rows) == 12 and took < 60, took  # 6 methods x 2 task families, no weights loaded
    gpu, table = plan.plan(["sweep=paper"], "H100-80GB", plan.ASSUMED_MFU)
    assert table["fits"].all() and table["train_hours"].notna().all() and (table["predicted_gib"] > 0).all()
    # the paper's files are not fetched here: their examples are the size the name states, and said so
    assert set(table["examples"]) == {10_000, 170_000} and table["examples_basis"].str.startswith("nominal").all()
    # 3 epochs of batch 16: ceil(3 x 10,000 / 16) optimizer steps
    assert set(table.loc[table["run"].str.contains("arithmetic"), "steps"]) == {1875}
    assert f"{table['train_hours'].sum():.1f} GPU-hours" in out and "MFU 0.15 assumed" in out


def test_time_follows_the_throughput_model():
    """tokens x FLOPs per token / (MFU x peak): LoRA (frozen base, 4N) takes 2/3 of full's 6N."""
    _, table = plan.plan(["model=llama-7b", "method=full,lora", "task.train_set=math_10k", "train.epochs=1"],
                         "H200", 0.2)
    full, lora = table["train_hours"]
    assert lora / full == pytest.approx(4 / 6, rel=1e-3)
    _, slower = plan.plan(["model=llama-7b", "method=lora", "task.train_set=math_10k", "train.epochs=1"], "H200", 0.1)
    assert slower["train_hours"][0] == pytest.approx(2 * lora, rel=1e-2)


def test_a_run_that_does_not_fit_gets_the_cheapest_change_that_fits():
    _, table = plan.plan(["model=llama-7b", "method=lora,full", "task.train_set=math_10k"], "L4", 0.15)
    lora, full = table.iloc[0], table.iloc[1]
    assert not lora["fits"] and lora["change"].startswith("train.micro_batch_size=")
    assert float(lora["change"].split("-> ")[1].split(" GiB")[0]) <= 22.0
    assert not full["fits"] and full["change"] == "none found"  # 7B full fine-tuning on 22 GiB: nothing tried fits


def test_a_runs_own_gpu_record_stands_beside_its_prediction(tmp_path, capsys):
    overrides = ["model=llama-7b", "method=lora", "task.train_set=math_10k", f"results_dir={tmp_path}"]
    resolved = OmegaConf.to_container(resolve_one(overrides, here=False), resolve=True)
    run_id = record.run_id(resolved, "cuda")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{run_id}.json").write_text(json.dumps({
        "status": "ok", "run_id": run_id, "run_info": {"config": resolved},
        "meta_info": {"device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3"},
        "memory": {"train": {"peak_allocated_gib": 20.0}},
        "train_info": {"throughput": {"wall_seconds": 3600.0, "mfu": 0.05, "real_tokens": 100, "samples": 1}}}))
    _, table = plan.plan(overrides, "H100-80GB", 0.15)
    row = table.iloc[0]
    assert row["measured_gib"] == 20.0 and row["measured_hours"] == 1.0
    assert row["mfu"] == "0.05 (median of 1 records)"  # the record's measured MFU replaces the assumption
    assert row["gib_error_pct"] == pytest.approx(100 * (row["predicted_peak_gib"] / 20.0 - 1), abs=0.1)
    assert row["predicted_peak_gib"] < row["predicted_gib"]  # the total adds the CUDA context


@pytest.mark.parametrize("argv, says", [(["--mfu", "2"], "--mfu 2.0"), (["metod=lora"], "unknown key")])
def test_bad_input_is_one_line_and_exit_2(argv, says, capsys):
    assert plan.main(argv) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and "Traceback" not in err


def test_an_unknown_gpu_is_refused_by_the_parser_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        plan.main(["--gpu", "H300"])
    assert exc.value.code == 2 and "H100-80GB" in capsys.readouterr().err


def test_a_study_is_planned_as_its_grid_and_its_final_runs():
    from harness import study
    s = study.load("tiny", ["study=tiny"])
    _, table = plan.plan(["study=tiny"], "H200", 0.15)
    tune = table["run"].str.contains(", tune lr")
    final = table["run"].str.contains(", final lr")
    assert tune.sum() == len(s.methods) * len(s.lr_grid) and final.sum() == len(s.methods) * len(s.seeds)
    assert len(table) == tune.sum() + final.sum()


def test_a_method_the_estimator_does_not_model_is_planned_without_a_memory_estimate(capsys):
    assert plan.main(["sweep=paper-prefix", "--gpu", "H100-80GB"]) == 0
    out = capsys.readouterr().out
    assert "no VRAM estimate: method prefix_tuning is not modelled" in out and "1 runs without a VRAM estimate" in out
    _, table = plan.plan(["sweep=paper-prefix"], "H100-80GB", 0.15)
    assert table["train_hours"].notna().all()  # its time does not need the memory estimate
