"""One front door for configuration: every case a new user hit is refused before anything is
loaded or written (exit 2, one line naming the fix), or warned about in the log and the record."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import refused_in_process
from omegaconf import OmegaConf

from harness import methods
from harness.config import CONF_DIR
from harness.config.overrides import resolve_one
from harness.config.overrides import group_choices, resolve
from harness.errors import ConfigError
from harness.pipeline import runner
from harness.pipeline.train import total_steps

REPO = Path(__file__).resolve().parents[1]
QUICK = ["model=tiny-random", "task=arithmetic", "train.max_steps=1", "train.batch_size=2",
         "train.micro_batch_size=2", "eval.limit=1", "eval.max_new_tokens=4", "forgetting.enabled=false",
         "task.test_sets=[gsm8k]"]
GOOD = {"instruction": "1+1?", "input": "", "output": "The answer is 2.", "answer": "2"}


def cli(results: Path, cache: Path, *args: str, env: dict | None = None, quick=QUICK):
    cmd = [sys.executable, "-m", "harness", *quick, f"results_dir={results}", f"cache_dir={cache}", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})})


def refused(done, *words):
    """Exit 2, one 'error:' line holding `words`, no traceback."""
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    for w in words:
        assert w in errors[0], (w, errors[0])
    return errors[0]


BAD = {
    # case: (overrides, words of the one error line)
    "negative lr (case 1)": (["method=lora", "method.lr=-1e-4"], ["method.lr", "positive"]),
    "zero lr": (["method=full", "method.lr=0"], ["method.lr", "positive"]),
    "key typo (case 3)": (["train.max_step=2"], ["unknown key 'train.max_step'", "did you mean train.max_steps",
                                                  "the keys of train:", "micro_batch_size"]),
    "+ key typo (case 3)": (["+train.max_step=2"], ["unknown key 'train.max_step'", "did you mean train.max_steps"]),
    "+ on a typed key": (["+train.max_steps=2"], ["exists already", "train.max_steps=2"]),
    "schema as a choice (case 4)": (["method=method_schema"], ["unknown method 'method_schema'", "lora"]),
    "negative max_steps (case 5)": (["train.max_steps=-5"], ["train.max_steps=-5", ">= 0"]),
    "path for another model source (case 9)": (["model.name_or_path=/nonexistent/dir"],
                                               ["model.name_or_path", "source hub", "tiny_random"]),
    "section of another method (case 9)": (["method=lora", "method.adapter.bottleneck_size=8"],
                                           ["method.adapter", "adapter_series", "method=lora reads"]),
    "quantised base for full fine-tuning": (["method=full", "method.quantization.bits=4"],
                                            ["method.quantization", "qlora4"]),
    "peft key typo": (["method=lora", "method.peft.lora_alpa=8"], ["method.peft.lora_alpa", "LoraConfig",
                                                            "did you mean method.peft.lora_alpha"]),
    "lora rank 0": (["method=lora", "method.peft.r=0"], ["method.peft.r=0", "positive"]),
    "lora alpha negative": (["method=lora", "method.peft.lora_alpha=-4"], ["method.peft.lora_alpha=-4", "positive"]),
    "secret-looking key": (["+wandb.api_key=s3cr3tvalue"], ["unknown key 'wandb.api_key'"]),
    "type error (Hydra's exit 1 before)": (["train.max_steps=abc"], ["train.max_steps", "Integer"]),
    "bad enum": (["eval.scoring=vibes"], ["eval.scoring", "generate"]),
    "unknown choice in a sweep": (["-m", "method=lora,lorra"], ["unknown method 'lorra'", "did you mean lora"]),
    "several values without -m": (["method=lora,dora"], ["add -m"]),
    "train key for a method that does not train": (["method=none"], ["train.max_steps", "does not train"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_before_anything_is_written(case, tmp_path, work_dirs):
    overrides, words = BAD[case]
    results = tmp_path / "results"
    message = refused_in_process(*QUICK, f"results_dir={results}", f"cache_dir={work_dirs['cache']}", *overrides,
                                 "wandb.enabled=true")
    for w in words:
        assert w in message, (w, message)
    assert not results.exists(), sorted(results.rglob("*"))  # no record, no W&B directory, nothing


def test_the_schemas_are_not_choices():
    for group in ("model", "method", "task"):
        assert not [c for c in group_choices(group) if "schema" in c]
    # one YAML per registry entry, named as it is; any other YAML is a preset of a registered method
    # (dora_r16: DoRA at the DoRA paper's rank 16), built on that method's own YAML
    choices = set(group_choices("method"))
    assert set(methods.all_methods()) <= choices
    for preset in choices - set(methods.all_methods()):
        text = (CONF_DIR / "method" / f"{preset}.yaml").read_text()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("name:"))
        assert name in methods.all_methods() and f"  - {name}\n" in text, preset


def test_a_training_file_without_output_is_refused(tmp_path, work_dirs):
    path = tmp_path / "no_output.json"
    path.write_text(json.dumps([GOOD, {"instruction": "2+2?", "input": "", "answer": "4"}]))
    args = (*QUICK, f"results_dir={tmp_path / 'results'}", f"cache_dir={work_dirs['cache']}", "method=lora",
            f"task.train_set={path}")
    message = refused_in_process(*args)
    assert all(w in message for w in ("no_output.json", "record 1", "'output'")), message
    path.write_text(json.dumps([GOOD, {**GOOD, "output": "  "}]))
    message = refused_in_process(*args)
    assert "record 1" in message and "empty 'output'" in message, message
    assert not (tmp_path / "results").exists()


def test_a_training_set_smaller_than_a_batch_is_warned_in_log_and_record(tmp_path, compose_run, caplog):
    path = tmp_path / "one.json"
    path.write_text(json.dumps([GOOD]))
    caplog.set_level("INFO")
    rec = runner.run(compose_run("method=bitfit", f"task.train_set={path}", "train.batch_size=16",
                                 "train.micro_batch_size=16", "train.max_steps=1", "eval.limit=1",
                                 "forgetting.enabled=false", results=tmp_path / "results"))
    assert rec.status == "ok" and any("fewer than one batch" in w for w in rec.warnings)
    # logged as a warning: the console shows warnings (conf/hydra/job_logging/harness.yaml)
    assert any(r.levelname == "WARNING" and "fewer than one batch" in r.getMessage() for r in caplog.records)
    assert "fewer than one batch" in Path(rec.run_info.log).read_text()  # and in the run's own log file


def test_max_steps_replaces_epochs_and_an_absurd_run_is_warned(work_dirs):
    t = OmegaConf.create({"max_steps": 7, "epochs": 3.0, "batch_size": 4})
    assert total_steps(t, 1000) == 7  # max_steps decides, whatever epochs says
    assert total_steps(OmegaConf.merge(t, {"max_steps": 0}), 1000) == 750  # ceil(3 x 1000 / 4)
    cfg = resolve_one(["model=tiny-random", "method=bitfit", "train.max_steps=1000000000000", "wandb.enabled=false",
                   f"cache_dir={work_dirs['cache']}"])
    plan = runner.Plan(cfg)
    records = runner.load_data(plan).train
    assert len(records) == 9128  # a capped run tokenises at most the data it has
    assert any("passes over" in w and "train.max_steps=1000000000000" in w for w in plan.warnings)
    assert not runner.Plan(resolve_one(["model=tiny-random", "method=bitfit", "train.max_steps=10"])).warnings


# one status through the command's own exit; how every status maps to the exit is tested in-process
# (test_the_exit_status_reads_each_runs_own_record)
@pytest.mark.parametrize("fault,status", [("nan@1", "diverged"), pytest.param("oom@1", "oom", marks=pytest.mark.slow)])
def test_a_single_run_that_does_not_end_ok_exits_non_zero(fault, status, tmp_path, work_dirs):
    done = cli(tmp_path / "results", work_dirs["cache"], "method=lora", "wandb.enabled=false",
               env={"PEFT_BENCH_INJECT_FAULT": fault})
    assert done.returncode == 1, done.stderr[-2000:]
    [rec] = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*.json")]
    assert rec["status"] == status and "did not end ok" in done.stderr


def test_wandb_mode_env_is_honoured_over_a_key(tmp_path, work_dirs):
    """Case 8: a key in the environment and WANDB_MODE=offline: offline, quickly, record written."""
    done = cli(tmp_path / "results", work_dirs["cache"], "method=bitfit", "wandb.enabled=true",
               env={"WANDB_API_KEY": "f" * 40, "WANDB_MODE": "offline"})
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = (tmp_path / "results" / "runs").glob("*.json")
    assert list((tmp_path / "results" / "wandb").rglob("offline-run-*"))  # W&B followed results_dir
    # output is for people: no W&B banner or summary, no weight-loading bar, no library warnings on the
    # console; the scores and warnings are in the run's own log, which the record names
    console = done.stdout + done.stderr
    assert not any(line.startswith("wandb:") for line in console.splitlines()), console[-3000:]
    assert "Loading weights" not in console and "Warning:" not in console, console[-3000:]
    assert len(done.stdout.splitlines()) <= 3, done.stdout
    rec = json.loads(path.read_text())
    run_log = Path(rec["run_info"]["log"])
    assert run_log == tmp_path / "results" / "logs" / f"{rec['run_id']}.log"
    text = run_log.read_text()
    assert "gsm8k:" in text and "W&B run" in text and "evaluation:" in text


def test_results_dir_moves_cache_and_wandb(tmp_path):
    cfg = resolve_one(["model=tiny-random", f"results_dir={tmp_path}/elsewhere"])
    assert cfg.cache_dir == f"{tmp_path}/elsewhere/cache" and cfg.wandb.dir == f"{tmp_path}/elsewhere/wandb"


def test_lora_on_a_4bit_base_is_qlora(work_dirs):
    """method=lora method.quantization.bits=4 is QLoRA done right, the same recipe as method=qlora4."""
    pytest.importorskip("bitsandbytes")
    lora4 = resolve_one(["model=tiny-random", "method=lora", "method.quantization.bits=4"])
    qlora4 = resolve_one(["model=tiny-random", "method=qlora4"])
    assert OmegaConf.to_container(lora4.method.quantization) == OmegaConf.to_container(qlora4.method.quantization)
    assert lora4.method.peft == qlora4.method.peft
    with pytest.raises(ConfigError, match="takes one of"):
        resolve_one(["model=tiny-random", "method=qlora4", "method.quantization.bits=8"])


def test_a_sweep_checks_every_run_before_starting_any(tmp_path, work_dirs):
    """A key that applies to some runs of a sweep is fine; one that applies to none is refused."""
    cfgs, _, multirun = resolve(["model=tiny-random", "method=lora,adapter_series", "method.peft.r=4"], multirun=True)
    assert multirun and [c.method.name for c in cfgs] == ["lora", "adapter_series"] and cfgs[0].method.peft.r == 4
    with pytest.raises(ConfigError, match="method.adapter"):
        resolve(["model=tiny-random", "method=lora,dora", "method.adapter.bottleneck_size=4"], multirun=True)


def test_the_exit_status_reads_each_runs_own_record(compose_run, tmp_path, capsys):
    """`python -m harness` exits 1 when a run of the command did not end ok, read from the records the
    runs left (the launcher may run them in other processes): a record written since the command
    started, or the complete record a run reused; a run that left neither did not end ok."""
    from datetime import datetime, timezone
    from harness.__main__ import exit_status

    def now() -> str:
        return datetime.now(timezone.utc).isoformat()
    cfg = compose_run("method=none", results=tmp_path)
    started = now()
    assert exit_status([cfg], started) == 1 and "(no record)" in capsys.readouterr().err
    rec = runner.run(cfg)
    assert exit_status([cfg], started) == 0
    later = now()
    assert exit_status([cfg], later) == 0  # a rerun would reuse the complete record: its status counts
    assert exit_status([compose_run("method=none", "force=true", results=tmp_path)], later) == 1  # forced, nothing new
    path = tmp_path / "runs" / f"{rec.run_id}.json"
    path.write_text(json.dumps({**rec.to_json(), "status": "diverged"}))
    assert exit_status([cfg], later) == 1 and rec.run_id in capsys.readouterr().err


@pytest.mark.parametrize("family", ["arithmetic", "commonsense"])
def test_a_task_family_is_declared_once_and_the_config_reads_it(family):
    """The family module (harness/tasks/<family>.py) declares its test sets, generation length and the
    paper's training set; conf/task/<family>.yaml only picks the family and its training set, and the
    composed config carries the family's values unless the command line gives others."""
    from harness import tasks
    from harness.config import CONF_DIR
    declared = tasks.get_family(family)
    yaml_keys = set(OmegaConf.load(CONF_DIR / "task" / f"{family}.yaml")) - {"defaults"}
    assert yaml_keys == {"name", "train_set"}
    task = resolve_one([f"task={family}", "method=none"]).task
    assert list(task.test_sets) == list(declared.test_sets) and task.max_new_tokens == declared.max_new_tokens
    assert task.paper_train_set == declared.paper_train_set
    first = next(iter(declared.test_sets))
    task = resolve_one([f"task={family}", "method=none", f"task.test_sets=[{first}]", "task.max_new_tokens=7"]).task
    assert list(task.test_sets) == [first] and task.max_new_tokens == 7
    with pytest.raises(ConfigError, match=r"task.test_sets=\[\] names no test set"):
        resolve_one([f"task={family}", "method=none", "task.test_sets=[]"])
