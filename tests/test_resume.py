"""Resume after interruption: a run killed (kill -9) mid-training and rerun continues from its last
training snapshot and ends exactly where an uninterrupted run of the same config ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness.pipeline.train_state import COMPLETE, STEPS, Checkpoints, fingerprint

pytestmark = pytest.mark.slow  # end to end: `make test SLOW=1` and CI run it

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model=tiny-random", "task=arithmetic", "train.max_steps=6", "train.batch_size=2",
         "train.micro_batch_size=1", "train.warmup_steps=2", "eval.limit=3", "eval.max_new_tokens=8",
         "forgetting.enabled=false", "wandb.enabled=false", "task.test_sets=[svamp]", "resume.every_steps=2"]
WEIGHTS = {"lora": "adapter_model.safetensors", "full": "model.safetensors"}


def run(results: Path, cache: Path, method: str, *extra: str, fault: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PEFT_BENCH_INJECT_FAULT": fault}
    args = [sys.executable, "-m", "harness", f"method={method}", *QUICK, *extra,
            f"results_dir={results}", f"cache_dir={cache}"]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def the_record(results: Path) -> dict:
    (path,) = (results / "runs").glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.parametrize("method", ["lora", "full"])  # LoRA: dropout draws random numbers; full: every weight
def test_a_run_killed_mid_training_resumes_and_matches_an_uninterrupted_run(tmp_path, work_dirs, method):
    cache = work_dirs["cache"]
    killed = run(tmp_path / "a", cache, method, fault="kill@5")  # dies inside step 5; snapshot at step 4
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not list((tmp_path / "a" / "runs").glob("*.json")), "a killed run must leave no record"
    (state,) = (tmp_path / "a" / "train_state").iterdir()
    checkpoints = sorted(p.name for p in state.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-4"], checkpoints  # Trainer's, the newest kept
    assert len(json.loads((state / "checkpoint-4" / STEPS).read_text())["losses"]) == 4

    resumed = run(tmp_path / "a", cache, method)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = run(tmp_path / "b", cache, method)
    assert reference.returncode == 0, reference.stderr[-2000:]

    got, want = the_record(tmp_path / "a"), the_record(tmp_path / "b")
    assert got["run_id"] == want["run_id"]  # snapshot settings are not part of what a run computes
    assert got["train_info"]["resumed_from_step"] == 4 and want["train_info"]["resumed_from_step"] == 0
    assert got["train_info"]["throughput"]["steps_timed"] == 2 and want["train_info"]["throughput"]["steps_timed"] == 6
    assert got["train_info"]["losses"] == want["train_info"]["losses"] and len(got["train_info"]["losses"]) == 6
    assert got["train_info"]["epochs_seen"] == want["train_info"]["epochs_seen"]
    assert got["eval"]["svamp"]["correct"] == want["eval"]["svamp"]["correct"]
    run_id = got["run_id"]
    for name in ("svamp.jsonl",):
        assert (tmp_path / "a" / "predictions" / run_id / name).read_text() == \
            (tmp_path / "b" / "predictions" / run_id / name).read_text()
    a = load_file(str(tmp_path / "a" / "checkpoints" / run_id / WEIGHTS[method]))
    b = load_file(str(tmp_path / "b" / "checkpoints" / run_id / WEIGHTS[method]))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not state.exists(), "a recorded run's snapshot is removed"


def test_resume_restart_starts_over_instead_of_resuming(tmp_path, work_dirs):
    killed = run(tmp_path, work_dirs["cache"], "bitfit", fault="kill@3")
    assert killed.returncode == -signal.SIGKILL
    assert list((tmp_path / "train_state").iterdir())
    again = run(tmp_path, work_dirs["cache"], "bitfit", "resume.restart=true")
    assert again.returncode == 0, again.stderr[-2000:]
    assert the_record(tmp_path)["train_info"]["resumed_from_step"] == 0


def test_checkpoints_of_another_run_or_unfinished_ones_are_ignored(tmp_path, make_tiny_llama):
    model = make_tiny_llama()
    mine, other = fingerprint(model, 10, 100, 2), fingerprint(model, 20, 100, 2)  # another step budget
    ckpts = Checkpoints(tmp_path / "state", every_steps=1)
    ckpts.start(mine)
    for step, complete in ((2, True), (4, True), (6, False)):  # 6: killed while Trainer was saving it
        d = tmp_path / "state" / f"checkpoint-{step}"
        d.mkdir()
        (d / STEPS).write_text(json.dumps({"losses": [1.0] * step, "samples": 4 * step}))
        if complete:
            (d / COMPLETE).write_text("")
    path, done = ckpts.latest(mine)
    assert path.name == "checkpoint-4" and done == {"losses": [1.0] * 4, "samples": 16}
    assert ckpts.latest(other) == (None, {"losses": [], "samples": 0})
    assert not (tmp_path / "state").exists(), "another run's checkpoints are discarded"
    off = Checkpoints(tmp_path / "state", every_steps=0, every_minutes=0)  # checkpoints off: nothing read
    off.start(mine)
    assert not off.enabled and off.latest(mine)[0] is None and not (tmp_path / "state").exists()
