"""Bad input: one clear message naming the fix, a non-zero exit, nothing half-written."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import refused_in_process

from harness.pipeline import runner

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model=tiny-random", "task=arithmetic", "train.max_steps=1", "train.batch_size=2",
         "train.micro_batch_size=2", "eval.limit=1", "eval.max_new_tokens=4", "forgetting.enabled=false",
         "wandb.enabled=false", "task.test_sets=[gsm8k]"]


def cli(tmp_path: Path, cache: Path, *overrides: str, results: Path | None = None):
    results = results or tmp_path / "results"
    args = [sys.executable, "-m", "harness", *QUICK, f"results_dir={results}", f"cache_dir={cache}", *overrides]
    return subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def nothing_written(results: Path) -> bool:
    return not list(results.rglob("*.json")) and not list(results.rglob("*.jsonl"))


def write_train_file(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


GOOD = {"instruction": "1+1?", "input": "", "output": "The answer is 2.", "answer": "2"}

CASES = {
    # name: (overrides builder, expected words in the message, expected exit codes)
    "unknown method": (lambda p: ["method=loraa"], ["unknown method 'loraa'", "did you mean lora", "one of"], (2,)),
    "unknown model": (lambda p: ["model=gpt5"], ["unknown model 'gpt5'", "smollm2-135m", "hub id"], (2,)),
    "unknown task": (lambda p: ["task=algebra"], ["unknown task 'algebra'", "arithmetic"], (2,)),
    "unknown sweep": (lambda p: ["sweep=huge"], ["unknown sweep 'huge'", "default"], (2,)),
    "model path missing": (lambda p: ["model=qwen2.5-0.5b", f"model.name_or_path={p / 'no-such-model'}"],
                           ["does not exist", "model.name_or_path"], (2,)),
    "model dir as the model choice": (lambda p: [f"model={p / 'no-such-dir'}"], ["does not exist"], (2,)),
    "gguf file missing": (lambda p: ["model=smollm2-135m", f"model.gguf_path={p / 'none.gguf'}"],
                          ["model.gguf_path", "does not exist"], (2,)),
    "train file missing": (lambda p: [f"task.train_set={p / 'missing.json'}"], ["not found", "missing.json"], (2,)),
    "train file empty": (lambda p: [f"task.train_set={write_train_file(p, 'empty.json', b'[]')}"],
                         ["empty.json", "no records"], (2,)),
    "train file not JSON": (lambda p: [f"task.train_set={write_train_file(p, 'bad.json', b'{oops')}"],
                            ["bad.json", "not valid JSON"], (2,)),
    "record lacks a field": (lambda p: [f"task.train_set={write_train_file(p, 'lack.json', json.dumps([GOOD, GOOD, {'instruction': 'x', 'input': '', 'output': 'y'}]).encode())}"],
                             ["lack.json", "record 2", "answer"], (2,)),
    "corrupt gzip": (lambda p: [f"task.train_set={write_train_file(p, 'bad.json.gz', gzip.compress(b'[]')[:-6])}"],
                     ["bad.json.gz"], (2,)),
    "zero batch size": (lambda p: ["train.batch_size=0"], ["batch_size", "positive"], (2,)),
    "negative micro batch": (lambda p: ["train.micro_batch_size=-2"], ["micro_batch_size", "positive"], (2,)),
    "batch not a multiple": (lambda p: ["train.batch_size=3"], ["multiple of train.micro_batch_size"], (2,)),
    "eval.limit too large": (lambda p: ["eval.limit=5000"], ["eval.limit=5000", "1319", "eval.limit=0"], (2,)),
    "label scoring on numeric sets": (lambda p: ["eval.scoring=label"], ["eval.scoring=label", "multiple-choice"], (2,)),
    "cloze scoring on arithmetic": (lambda p: ["eval.scoring=cloze"], ["eval.scoring=cloze", "commonsense"], (2,)),
    "unknown test set": (lambda p: ["task.test_sets=[gsm9k]"], ["gsm9k", "gsm8k"], (2,)),
    "results dir unwritable": (lambda p: [f"results_dir={write_train_file(p, 'a_file', b'x') / 'results'}"],
                               ["results directory", "results_dir"], (2,)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_message_and_no_record(case, tmp_path, work_dirs):
    build, words, _ = CASES[case]
    message = refused_in_process(*QUICK, f"results_dir={tmp_path / 'results'}", f"cache_dir={work_dirs['cache']}",
                                 *build(tmp_path))
    for w in words:
        assert w in message, (w, message[-1500:])
    assert nothing_written(tmp_path / "results")


# the command's own promises (exit status 2, one line on stderr, no traceback), kept for one case
# found by each stage: the front door (names), the checks (ranges), the data read after Hydra started
@pytest.mark.parametrize("case", ["unknown method", "batch not a multiple", "train file not JSON",
                                  "results dir unwritable"])
def test_the_command_exits_2_with_one_line_and_no_traceback(case, tmp_path, work_dirs):
    build, words, codes = CASES[case]
    done = cli(tmp_path, work_dirs["cache"], *build(tmp_path))
    assert done.returncode in codes, (done.returncode, done.stderr[-1500:])
    for w in words:
        assert w in done.stderr, (w, done.stderr[-1500:])
    assert "Traceback" not in done.stderr and done.stderr.count("error: ") == 1
    assert nothing_written(tmp_path / "results")


def test_a_good_user_train_file_is_used_and_hashed(tmp_path, compose_run):
    path = write_train_file(tmp_path, "mine.json", json.dumps([GOOD] * 4).encode())
    rec = runner.run(compose_run("method=bitfit", f"task.train_set={path}", "train.max_steps=1", "eval.limit=1",
                                 "forgetting.enabled=false", results=tmp_path / "results"))
    assert rec.status == "ok"
    assert rec.data.train[0]["records"] == 4 and len(rec.data.train[0]["sha256"]) == 64
