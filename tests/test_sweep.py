"""Sweeps: isolation (a failing run is recorded and the sweep goes on) and resume after kill -9."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.ui.sweep_progress import count_jobs

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model=tiny-random", "task=arithmetic", "train.max_steps=2", "train.batch_size=2",
         "train.micro_batch_size=2", "eval.limit=2", "eval.max_new_tokens=8", "forgetting.enabled=false",
         "wandb.enabled=false", "task.test_sets=[gsm8k,aqua]"]


def sweep(tmp_path: Path, cache: Path, methods: str, env_extra: dict | None = None, wait=True):
    args = [sys.executable, "-m", "harness", "-m", f"method={methods}", *QUICK,
            f"results_dir={tmp_path}", f"cache_dir={cache}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    if wait:
        return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    return subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)


def records(tmp_path: Path) -> dict:
    out = {}
    for p in (tmp_path / "runs").glob("*.json"):
        rec = json.loads(p.read_text())  # every record parses: none is truncated
        out[rec["run_info"]["method"]] = rec
    return out


@pytest.mark.slow
def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, work_dirs):
    done = sweep(tmp_path, work_dirs["cache"], "lora,bitfit,adapter_series",
                 {"PEFT_BENCH_INJECT_FAULT": "oom@1:lora"})
    assert done.returncode == 1, done.stderr[-2000:]  # the sweep went on, and its exit status says a run failed
    assert "1 run(s) did not end ok: tiny-random__lora__arithmetic" in done.stderr
    recs = records(tmp_path)
    assert recs["lora"]["status"] == "oom" and "out of memory" in recs["lora"]["error"]
    assert recs["bitfit"]["status"] == "ok" and recs["adapter_series"]["status"] == "ok"
    assert "[3/3]" in done.stdout and "sweep finished: 3 runs" in done.stdout and "oom 1" in done.stdout


@pytest.mark.slow
def test_nan_loss_is_recorded_as_diverged_with_the_step(tmp_path, work_dirs):
    done = sweep(tmp_path, work_dirs["cache"], "lora", {"PEFT_BENCH_INJECT_FAULT": "nan@2"})
    assert done.returncode == 1, done.stderr[-2000:]
    rec = records(tmp_path)["lora"]
    assert rec["status"] == "diverged" and rec["diverged_at_step"] == 2


@pytest.mark.slow
def test_kill_9_then_rerun_records_every_run_exactly_once(tmp_path, work_dirs):
    methods = "none,bitfit,lora"
    proc = sweep(tmp_path, work_dirs["cache"], methods, wait=False)
    deadline = time.time() + 600
    while time.time() < deadline and not list((tmp_path / "runs").glob("*.json")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9 the whole sweep mid-way
    proc.wait()
    first = records(tmp_path)
    assert 1 <= len(first) < 3, "the sweep should have been killed part-way"
    done = sweep(tmp_path, work_dirs["cache"], methods)
    assert done.returncode == 0, done.stderr[-2000:]
    again = records(tmp_path)
    assert set(again) == {"none", "bitfit", "lora"}
    assert len(list((tmp_path / "runs").glob("*.json"))) == 3  # exactly once each
    for method, rec in first.items():  # finished runs were skipped, not redone
        assert again[method]["run_info"]["started"] == rec["run_info"]["started"]
    assert "skipped" in done.stdout


def test_count_jobs_multiplies_sweep_dimensions():
    from omegaconf import OmegaConf
    cfg = OmegaConf.create({"hydra": {"sweeper": {"params": {"method": "a,b,c", "task": "x,y"}},
                                      "overrides": {"task": ["seed=1,2", "method=lora,dora"]}}})
    assert count_jobs(cfg) == 2 * 2 * 2  # the command line's method list replaces the preset's


@pytest.mark.slow
def test_submitit_local_launcher_runs_each_job_in_its_own_process(tmp_path, work_dirs):
    args = [sys.executable, "-m", "harness", "-m", "method=none,bitfit", *QUICK, f"results_dir={tmp_path}",
            f"cache_dir={work_dirs['cache']}", "hydra/launcher=submitit_local"]
    done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(records(tmp_path)) == {"none", "bitfit"}
    assert "2 run(s) need 1 GPU(s)" in done.stdout + done.stderr  # sized by the VRAM estimate
    assert "sweep finished: 2 runs" in done.stdout and "ok 2" in done.stdout


def test_gpu_request_follows_the_vram_estimate():
    from harness.config.overrides import resolve_one
    from harness.pipeline.launcher import gpus_needed
    from omegaconf import OmegaConf

    def resolved(*overrides):
        return OmegaConf.to_container(resolve_one(list(overrides)), resolve=True)

    assert gpus_needed(resolved("model=smollm2-135m", "method=lora"), 80) == 1
    assert gpus_needed(resolved("model=llama-13b", "method=full", "train.micro_batch_size=1"), 80) >= 2
    assert gpus_needed(resolved("model=llama-7b", "method=qlora4", "train.micro_batch_size=1"), 80) == 1
    bigger = gpus_needed(resolved("model=llama-13b", "method=full", "train.micro_batch_size=1"), 24)
    assert bigger > gpus_needed(resolved("model=llama-13b", "method=full", "train.micro_batch_size=1"), 80)
