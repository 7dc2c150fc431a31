"""Several processes (accelerate launch, DDP over gloo on 2 CPU processes): one record written by
rank 0, memory per rank, and the same training as a single process."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import record
from harness.pipeline import runner
from harness.pipeline.distributed import merge_memory

pytestmark = pytest.mark.slow  # end to end: `make test SLOW=1` and CI run it

REPO = Path(__file__).resolve().parents[1]
ARGS = ["method=lora", "model=tiny-random", "task=arithmetic", "train.max_steps=3", "train.batch_size=4",
        "train.micro_batch_size=2", "train.group_by_length=false", "eval.limit=2", "eval.max_new_tokens=8",
        "task.test_sets=[gsm8k]", "forgetting.enabled=false", "wandb.enabled=false", "save=false"]


@pytest.mark.skipif(shutil.which("accelerate") is None and not (Path(sys.executable).parent / "accelerate").exists(),
                    reason="accelerate CLI not installed")
def test_two_cpu_processes_match_one(tmp_path, work_dirs, compose_run):
    launcher = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([launcher, "launch", "--config_file", "conf/accelerate/cpu_ddp.yaml", "-m", "harness",
                           *ARGS, f"results_dir={tmp_path / 'two'}", f"cache_dir={work_dirs['cache']}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [path] = (tmp_path / "two" / "runs").glob("*.json")  # exactly one record: rank 0 writes
    two = record.read_record(path)
    assert two.status == "ok" and two.meta_info.world_size == 2
    assert two.train_info.processes == 2
    per_rank = two.phase_memory("train").per_rank
    assert len(per_rank) == 2 and two.phase_memory("train").peak_rss_gib == max(r["peak_rss_gib"] for r in per_rank)

    one = runner.run(compose_run(*ARGS, results=tmp_path / "one"))
    # each step's examples are split over the ranks and the loss is normalised by the step's total
    # token count, so the losses (and updates) match the single-process run
    for a, b in zip(one.train_info.losses, two.train_info.losses):
        assert a == pytest.approx(b, rel=1e-4)
    assert one.throughput.real_tokens == two.throughput.real_tokens


def test_merge_memory_takes_the_max_per_figure():
    merged = merge_memory([{"peak_allocated_gib": 1.0, "peak_reserved_gib": 2.0},
                           {"peak_allocated_gib": 3.0, "peak_reserved_gib": 1.5}])
    assert merged["peak_allocated_gib"] == 3.0 and merged["peak_reserved_gib"] == 2.0
    assert len(merged["per_rank"]) == 2
    assert merge_memory([{"peak_rss_gib": 1.0}]) == {"peak_rss_gib": 1.0}
