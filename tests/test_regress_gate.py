"""The regression gate can fail: on a copy of this repository, a baseline is saved, a harmless
commit passes, a commit that breaks scoring fails, a commit that breaks training fails. Each check
runs its sweep fresh with the code in front of it (the code id changes with every commit)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # end to end: `make test SLOW=1` and CI run it

REPO = Path(__file__).resolve().parents[1]
# cloze-scored commonsense on the tiny model: 160 items whose accuracy is not zero, and 3 steps
SWEEP = ["model=tiny-random", "method=bitfit", "task=commonsense", "eval.scoring=cloze", "eval.limit=20",
         "train.max_steps=3", "train.batch_size=4", "train.micro_batch_size=2", "forgetting.enabled=false",
         "wandb.enabled=false", "seed=1"]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A git repository holding this checkout's code (as it is in the working tree)."""
    root = tmp_path_factory.mktemp("clone")
    for part in ("harness", "conf", "hydra_plugins"):
        shutil.copytree(REPO / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root)
    git(root, "init", "-q")
    commit(root, "the code under test")
    return root


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=root, check=True)


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)


def change(root: Path, path: str, old: str, new: str) -> None:
    f = root / path
    text = f.read_text()
    assert old in text, f"{old!r} not in {path}: update this test with the code"
    f.write_text(text.replace(old, new, 1))


def regress(root: Path, cache: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m harness.regress` run in the clone, with the clone's code (cwd first on sys.path)."""
    return subprocess.run([sys.executable, "-m", "harness.regress", "--workdir", "results/regress",
                           "--cache-dir", str(cache), *args], cwd=root, capture_output=True, text=True,
                          timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_the_gate_passes_unchanged_code_and_fails_broken_scoring_and_training(clone, work_dirs):
    cache = work_dirs["cache"]
    saved = regress(clone, cache, "--save", "mine", *SWEEP)
    assert saved.returncode == 0, saved.stderr[-3000:]
    meta = json.loads((clone / "results/baselines/mine/baseline.json").read_text())
    assert meta["overrides"] == SWEEP and len(list((clone / "results/baselines/mine/runs").glob("*.json"))) == 1
    assert list((clone / "results/baselines/mine/predictions").rglob("*.jsonl"))
    accuracy = [json.loads(p.read_text())["eval"] for p in (clone / "results/baselines/mine/runs").glob("*.json")][0]
    assert sum(m["accuracy"] for m in accuracy.values()) > 100  # a regression to zero would show

    change(clone, "harness/pipeline/evaluate.py", '"""Evaluation:', '"""Evaluation (a comment edited):')
    commit(clone, "harmless")
    same = regress(clone, cache, "--baseline", "results/baselines/mine")
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert "-> PASS" in same.stdout and "MISSING" not in same.stdout
    assert len(list((clone / "results/regress").iterdir())) == 2  # a fresh directory for the new code id

    # a plausible bug: the predicted index compared with the gold label word, so nothing is ever correct
    change(clone, "harness/pipeline/cloze.py", '"correct": pred == it.gold', '"correct": pred == it.labels[it.gold]')
    commit(clone, "break scoring")
    broken = regress(clone, cache, "--baseline", "results/baselines/mine")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
    assert "| FAIL" in broken.stdout and "acc pooled" in broken.stdout

    git(clone, "revert", "--no-edit", "HEAD")
    # a plausible bug: the warmup computed but not passed on, so the first step runs at the full rate
    change(clone, "harness/pipeline/train.py", "warmup_steps=warmup, weight_decay=", "warmup_steps=0, weight_decay=")
    commit(clone, "break the learning-rate schedule")
    broken = regress(clone, cache, "--baseline", "results/baselines/mine")
    assert broken.returncode == 1, broken.stdout[-3000:] + broken.stderr[-3000:]
    fails = [line for line in broken.stdout.splitlines() if "| FAIL" in line]
    assert fails and all("train loss" in line for line in fails)  # training broke; scoring did not
