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


def write_record(results, overrides: list[str], device: str, **sections) -> dict:
    """A record of the run `overrides` describe, on `device`, with `sections`; its resolved config."""
    resolved = OmegaConf.to_container(resolve_one([*overrides, f"results_dir={results}"], here=False), resolve=True)
    run_id = record.run_id(resolved, device)
    (results / "runs").mkdir(parents=True, exist_ok=True)
    (results / "runs" / f"{run_id}.json").write_text(json.dumps({
        "status": "ok", "run_id": run_id, "run_info": {"config": resolved}, **sections}))
    return resolved


def test_a_runs_own_gpu_record_stands_beside_its_prediction_which_it_did_not_make(tmp_path, capsys):
    overrides = ["model=llama-7b", "method=lora", "task.train_set=math_10k"]
    h100 = {"device_type": "cuda", "device_name": "NVIDIA H100 80GB HBM3"}
    write_record(tmp_path, overrides, "cuda", meta_info=h100, memory={"train": {"peak_allocated_gib": 20.0}},
                 train_info={"throughput": {"wall_seconds": 3600.0, "mfu": 0.05, "real_tokens": 100, "samples": 1}})
    # another seed's record: the MFU the prediction may use (the run's own record must not predict itself)
    write_record(tmp_path, [*overrides, "seed=7"], "cuda", meta_info=h100,
                 train_info={"throughput": {"wall_seconds": 1800.0, "mfu": 0.10, "real_tokens": 100, "samples": 1}})
    _, table = plan.plan([*overrides, f"results_dir={tmp_path}"], "H100-80GB", 0.15)
    row = table.set_index("run").loc["llama-7b x lora x arithmetic (seed 42)"]
    assert row["measured_gib"] == 20.0 and row["measured_hours"] == 1.0
    assert row["mfu"] == "0.1 (median of 1 records)"  # seed 7's MFU, not the run's own 0.05
    assert row["hours_error_pct"] == pytest.approx(100 * (row["train_hours"] - 1.0), abs=0.1)
    assert row["gib_error_pct"] == pytest.approx(100 * (row["predicted_peak_gib"] / 20.0 - 1), abs=0.1)
    assert row["predicted_peak_gib"] < row["predicted_gib"]  # the total adds the CUDA context


def test_without_a_gpu_the_plan_predicts_this_cpus_time_from_other_records_and_shows_the_measured_one(tmp_path):
    from harness.record.env import cpu_model
    overrides = ["model=smollm2-135m", "method=lora", "train.max_steps=10"]
    here = {"device_type": "cpu", "cpu_model": cpu_model()}
    write_record(tmp_path, overrides, "cpu", meta_info=here, memory={"train": {"peak_rss_gib": 3.5}},
                 train_info={"throughput": {"wall_seconds": 90.0, "tokens_per_second": 5.0}})
    write_record(tmp_path, [*overrides, "seed=7"], "cpu", meta_info=here,
                 train_info={"throughput": {"wall_seconds": 60.0, "tokens_per_second": 400.0}})
    write_record(tmp_path, [*overrides, "seed=8"], "cpu", meta_info={**here, "cpu_model": "another CPU"},
                 train_info={"throughput": {"wall_seconds": 1.0, "tokens_per_second": 1e6}})
    _, table = plan.plan([*overrides, f"results_dir={tmp_path}"], None, 0.15)
    row = table.set_index("run").loc["smollm2-135m x lora x arithmetic (seed 42)"]
    assert row["cpu_speed"] == "400 tok/s (median of 1 records)"  # seed 7 only: not its own, not another CPU's
    assert row["cpu_minutes"] * 60 * 400 / 1e6 == pytest.approx(row["tokens_M"], abs=0.005)  # tokens_M is rounded
    assert row["measured_cpu_minutes"] == 1.5 and row["measured_rss_gib"] == 3.5
    assert row["cpu_minutes_error_pct"] == pytest.approx(100 * (row["cpu_minutes"] * 60 / 90 - 1), abs=0.2)


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
