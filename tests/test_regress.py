"""The regression gate on fixture record directories: pass when identical; an accuracy drop fails
only beyond its binomial standard error (so 4 items cannot fail on noise, 2,000 can fail on 5
points); training losses are compared step by step; memory and throughput only on the same device;
a missing run fails; bad input exits 2; a baseline published to W&B (offline) reads back equal."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.regress import cli as regress
from harness.regress.compare import accuracy_threshold
from harness.regress.sources import publish_wandb, record_from_wandb

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "records"
LORA_ARITH = "tiny-random__lora__arithmetic__s42__eccb4e9155.json"
LORA_COMMON = "tiny-random__lora__commonsense__s42__c623657511.json"


def copy_records(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for p in FIXTURES.glob("*.json"):
        shutil.copy(p, dest / p.name)
    return dest


@pytest.fixture
def dirs(tmp_path) -> tuple[Path, Path]:
    """(baseline records dir, current results dir with runs/), both copies of the fixtures."""
    return copy_records(tmp_path / "baseline"), copy_records(tmp_path / "current" / "runs").parent


def edit(path: Path, change) -> None:
    rec = json.loads(path.read_text())
    change(rec)
    path.write_text(json.dumps(rec))


def items(n):
    """Every evaluated set of a record holds `n` items."""
    return lambda r: [m.update(n=n) for m in r["eval"].values()]


def gate(baseline: Path, current: Path, capsys, *args) -> tuple[int, str, str]:
    code = regress.main(["--baseline", str(baseline), "--current", str(current), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def result_of(stdout: str, method: str, task: str, metric: str) -> str:
    """The result column of one comparison row of the printed Markdown table (columns found by header)."""
    column = None
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "model" and "result" in cells:
            column = {name: i for i, name in enumerate(cells)}
        elif column and len(cells) == len(column) and (cells[column["method"]], cells[column["task"]],
                                                       cells[column["metric"]]) == (method, task, metric):
            return cells[column["result"]]
    raise AssertionError(f"no row {method} {task} {metric} in:\n{stdout}")


def test_the_threshold_is_the_binomial_standard_error():
    assert accuracy_threshold(50, 4, 50, 4, z=3, floor=0) == pytest.approx(300 * (2 * 0.25 / 4) ** 0.5)
    assert accuracy_threshold(25, 1000, 25, 1000, z=3, floor=0) == pytest.approx(300 * (2 * 0.1875 / 1000) ** 0.5)
    assert accuracy_threshold(0, 4, 0, 4, z=3, floor=0) == 0  # nothing to lose: any drop is real
    assert accuracy_threshold(25, 0, 25, 4, z=3, floor=1.5) == 1.5  # unknown item count: the floor


def with_items(record: Path, predictions: Path, items: list[int], gsm8k: list[int] | None = None) -> None:
    """Every set of the record answered item by item as `items` (gsm8k as `gsm8k` when given): written
    as predictions under `predictions`, the record's accuracy and item count set from them."""
    rec = json.loads(record.read_text())
    for s, m in rec["eval"].items():
        answers = gsm8k if s == "gsm8k" and gsm8k is not None else items
        m.update(n=len(answers), correct=sum(answers), accuracy=100.0 * sum(answers) / len(answers))
        path = predictions / rec["run_id"] / f"{s}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps({"index": i, "correct": bool(c)}) + "\n" for i, c in enumerate(answers)))
    record.write_text(json.dumps(rec))


def paired_dirs(dirs, current_gsm8k: list[int]) -> tuple[Path, Path]:
    """Baseline: 60 of 100 items right on every set; current: the same but `current_gsm8k` on gsm8k."""
    baseline, current = dirs
    base_items = [1] * 60 + [0] * 40
    with_items(baseline / LORA_ARITH, baseline.parent / "predictions", base_items)
    with_items(current / "runs" / LORA_ARITH, current / "predictions", base_items, gsm8k=current_gsm8k)
    return baseline, current


def test_the_paired_test_catches_a_drop_the_unpaired_one_misses(dirs, capsys):
    # 10 of 100 items lost, none gained: -10 points; as two independent proportions that is within
    # 3 standard errors (21 points), on the same items it is 10 losses out of 10 changes (p = 0.002)
    baseline, current = paired_dirs(dirs, [1] * 50 + [0] * 50)
    assert accuracy_threshold(60, 100, 50, 100, z=3, floor=0) > 20
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "acc gsm8k") == "FAIL"
    assert "paired: 10 lost, 0 gained" in out and result_of(out, "lora", "arithmetic", "acc svamp") == "PASS"
    assert gate(baseline, current, capsys, "--acc-drop", "10")[0] == 0  # the floor still applies
    shutil.rmtree(current / "predictions")  # no per-item predictions: the unpaired test stands in, and says so
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and "unpaired (no per-item predictions" in out


def test_items_that_change_both_ways_are_not_a_regression(dirs, capsys):
    # 12 items lost and 8 gained (-4 points): what a nondeterministic GPU run does, not a broken change
    changed = [1] * 48 + [0] * 12 + [1] * 8 + [0] * 32
    baseline, current = paired_dirs(dirs, changed)
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and "paired: 12 lost, 8 gained" in out and "-4.00 pts" in out
    baseline, current = paired_dirs(dirs, [1] * 60 + [0] * 40)  # the same items right: nothing discordant
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and "paired: 0 lost, 0 gained, exact McNemar p=1" in out


def test_identical_results_pass(dirs, capsys):
    code, out, _ = gate(*dirs, capsys)
    assert code == 0
    assert "FAIL" not in out.split("\n\nregress:")[0] and "-> PASS" in out
    assert result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS"
    assert result_of(out, "lora", "arithmetic", "peak train mem (GiB)") == "PASS"


def test_a_5_point_drop_is_noise_on_4_items_and_a_regression_on_2000(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["gsm8k"].update(accuracy=20.0))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS" and "-5.00 pts" in out
    for path in (baseline / LORA_ARITH, current / "runs" / LORA_ARITH):
        edit(path, items(2000))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "acc gsm8k") == "FAIL"
    assert result_of(out, "lora", "arithmetic", "acc svamp") == "PASS"
    assert result_of(out, "lora", "arithmetic", "acc pooled") == "PASS"  # 5 points on 1 set of 7, items-weighted
    assert gate(baseline, current, capsys, "--z", "5")[0] == 0  # a looser z lets it through


def test_the_pooled_accuracy_catches_a_drop_spread_over_the_sets(dirs, capsys):
    baseline, current = dirs
    for path in (baseline / LORA_ARITH, current / "runs" / LORA_ARITH):
        edit(path, items(150))
    edit(current / "runs" / LORA_ARITH, lambda r: [m.update(accuracy=m["accuracy"] - 8) for m in r["eval"].values()])
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "acc pooled") == "FAIL"
    assert result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS"  # 8 points on 150 items: within noise


def test_the_floor_keeps_small_drops_on_huge_sets_from_failing(dirs, capsys):
    baseline, current = dirs
    for path in (baseline / LORA_ARITH, current / "runs" / LORA_ARITH):
        edit(path, items(1_000_000))
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["gsm8k"].update(accuracy=24.5))
    assert gate(baseline, current, capsys)[0] == 1
    assert gate(baseline, current, capsys, "--acc-drop", "1")[0] == 0


def test_seed_means_are_compared(dirs, capsys):
    baseline, current = dirs
    for seed in ("s1__3e28fe35ab", "s2__9a1212619f", "s3__9d79bd7080"):
        name = f"tiny-random__bitfit__arithmetic__{seed}.json"
        edit(baseline / name, items(20000))
        edit(current / "runs" / name, items(20000))
    edit(current / "runs" / "tiny-random__bitfit__arithmetic__s1__3e28fe35ab.json",
         lambda r: r["eval"]["gsm8k"].update(accuracy=19.0))  # -6 on one seed of 3: -2 on the mean
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and "-2.00 pts" in out


def test_training_losses_are_compared_step_by_step(dirs, capsys):
    baseline, current = dirs
    losses = [2.5, 2.4, 2.2, 2.1]
    for path in (baseline / LORA_ARITH, current / "runs" / LORA_ARITH):
        edit(path, lambda r: r["train_info"].update(losses=list(losses)))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "arithmetic", "train loss") == "PASS"
    edit(current / "runs" / LORA_ARITH, lambda r: r["train_info"].update(losses=[2.5, 2.4, 2.21, 2.1]))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "train loss") == "FAIL" and "step 3" in out
    assert gate(baseline, current, capsys, "--loss-rtol", "0.01")[0] == 0
    edit(current / "runs" / LORA_ARITH, lambda r: r["meta_info"].update(device_type="cuda"))
    code, out, _ = gate(baseline, current, capsys)
    assert result_of(out, "lora", "arithmetic", "train loss") == "SKIP"  # bf16 on a GPU is another computation


def test_vram_growth_of_30_percent_fails(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["memory"]["train"].update(
        peak_rss_gib=r["memory"]["train"]["peak_rss_gib"] * 1.3))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1
    assert result_of(out, "lora", "arithmetic", "peak train mem (GiB)") == "FAIL" and "+30.0%" in out
    assert gate(baseline, current, capsys, "--vram-growth", "0.35")[0] == 0


def test_throughput_drop_fails(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["train_info"]["throughput"].update(
        tokens_per_second=r["train_info"]["throughput"]["tokens_per_second"] * 0.5))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "train tokens/s") == "FAIL"


def test_throughput_is_compared_per_unit_of_the_hosts_measured_speed(dirs, capsys):
    """The same code ran 188 tokens/s one day and 147 two days later on the same 2-core EPYC: a slower
    host is not a slower harness. With the host's matrix-product speed on both sides the gate compares
    tokens/s per GFLOP/s; without it on one side, raw, and the row says which."""
    baseline, current = dirs

    def run(tps: float, host: float | None):
        return lambda r: r["train_info"]["throughput"].update(tokens_per_second=tps, host_gflops=host)
    edit(baseline / LORA_ARITH, run(188.0, 120.0))
    edit(current / "runs" / LORA_ARITH, run(147.0, 94.0))  # the host 22% slower, the code unchanged
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "arithmetic", "train tokens/s") == "PASS"
    assert "per host GFLOP/s (120 then 94); raw -21.8%" in out
    edit(current / "runs" / LORA_ARITH, run(94.0, 120.0))  # the host as fast, the code 50% slower
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "arithmetic", "train tokens/s") == "FAIL"
    edit(current / "runs" / LORA_ARITH, run(147.0, None))  # a record from before the host was measured
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and "raw: host speed not recorded on both sides" in out


def test_timings_from_another_device_are_not_compared(dirs, capsys):
    baseline, current = dirs

    def on_gpu(r):
        r["meta_info"].update(device_type="cuda", device_name="NVIDIA H100 80GB HBM3")
        r["memory"]["train"] = {"peak_allocated_gib": 9.0, "peak_reserved_gib": 10.0}
        r["train_info"]["throughput"]["tokens_per_second"] = 1.0
    edit(current / "runs" / LORA_ARITH, on_gpu)
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0
    assert result_of(out, "lora", "arithmetic", "peak train mem (GiB)") == "SKIP"
    assert result_of(out, "lora", "arithmetic", "train tokens/s") == "SKIP"
    assert "not comparable: different device" in out


def test_timings_from_another_cpu_model_are_not_compared(dirs, capsys):
    """CPU records all say device 'cpu': the CPU model tells an AMD EPYC from an Intel with AMX (the
    default baseline once failed 17 tokens/s rows for being rerun on the other machine)."""
    baseline, current = dirs
    for path in (current / "runs").glob("*.json"):
        edit(path, lambda r: r["meta_info"].update(cpu_model="AMD EPYC"))
    for path in (baseline / "runs").glob("*.json"):
        edit(path, lambda r: r["meta_info"].update(cpu_model="Intel(R) Xeon(R) Platinum 8488C"))
    edit(current / "runs" / LORA_ARITH, lambda r: r["train_info"]["throughput"].update(tokens_per_second=1.0))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "arithmetic", "train tokens/s") == "SKIP"
    assert "not comparable: different device" in out


def test_a_missing_run_fails_unless_allowed(dirs, capsys):
    baseline, current = dirs
    (current / "runs" / LORA_COMMON).unlink()
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and result_of(out, "lora", "commonsense", "run") == "MISSING"
    assert "nan" not in out.lower()  # a missing value reads as missing, not as a number
    assert gate(baseline, current, capsys, "--allow-missing")[0] == 0


def test_runs_not_ok_in_current_are_missing_not_compared(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_COMMON, lambda r: r.update(status="oom", error="OutOfMemoryError"))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and "current runs not ok: ['oom']" in out


def test_bad_input_exits_2(tmp_path, dirs, capsys):
    baseline, current = dirs
    code, _, err = gate(tmp_path / "nope", current, capsys)
    assert code == 2 and "no such directory" in err
    (tmp_path / "empty").mkdir()
    code, _, err = gate(tmp_path / "empty", current, capsys)
    assert code == 2 and "no records" in err
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.json").write_text("{not json")
    code, _, err = gate(tmp_path / "junk", current, capsys)
    assert code == 2 and "corrupt:" in err and "no records" in err
    code, _, err = gate(baseline, tmp_path / "nope", capsys)
    assert code == 2 and "current" in err
    code = regress.main(["--baseline", "wandb:only-a-project", "--current", str(current)])
    assert code == 2 and "wandb:<entity>/<project>/<group>" in capsys.readouterr().err
    code = regress.main(["--baseline", str(baseline)])  # a plain directory: which sweep to run is unknown
    assert code == 2 and "which sweep?" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        regress.main(["--baseline", str(baseline), "--z", "-1"])
    assert exc.value.code == 2


class FakeWandb:
    """A W&B server in memory: what wandb.init / run.summary store, wandb.Api().runs serves back."""

    def __init__(self, tmp_path):
        self.runs, self.tmp = [], tmp_path

    def init(self, **kwargs):
        run = SimpleNamespace(name=kwargs["name"], group=kwargs["group"], config=json.loads(json.dumps(
            {k: {"value": v, "desc": None} for k, v in kwargs["config"].items()})), summary={},
            dir=str(self.tmp / kwargs["name"] / "files"), finish=lambda: None, project=kwargs["project"])
        self.runs.append(run)
        return run

    def Api(self, timeout=None):
        def runs(path, filters):
            return [SimpleNamespace(name=r.name, config=r.config, summary=r.summary) for r in self.runs
                    if f"team/{r.project}" == path and r.group == filters["group"]]
        return SimpleNamespace(runs=runs)


def test_a_baseline_published_to_wandb_compares_equal_when_read_back(dirs, tmp_path, monkeypatch, capsys):
    baseline, current = dirs
    for path in baseline.glob("*.json"):
        edit(path, lambda r: (r.get("train_info") or {}).update(losses=[2.0, 1.9]) if r["status"] == "ok" else None)
    fake = FakeWandb(tmp_path)
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert regress.main(["--publish", "wandb:team/peft-bench/baseline-v1", "--baseline", str(baseline)]) == 0
    assert {r.name for r in fake.runs} == {p.stem for p in baseline.glob("*.json")}
    shutil.rmtree(current / "runs")
    copy_records(current / "runs")
    for path in (current / "runs").glob("*.json"):  # the same records: every comparison must pass
        edit(path, lambda r: (r.get("train_info") or {}).update(losses=[2.0, 1.9]) if r["status"] == "ok" else None)
    code = regress.main(["--baseline", "wandb:team/peft-bench/baseline-v1", "--current", str(current)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS"
    assert result_of(out, "lora", "arithmetic", "train loss") == "PASS"
    edit(current / "runs" / LORA_ARITH, lambda r: r["train_info"].update(losses=[2.0, 1.5]))
    assert regress.main(["--baseline", "wandb:team/peft-bench/baseline-v1", "--current", str(current)]) == 1


def test_publishing_offline_writes_one_run_per_record_in_the_group(dirs, monkeypatch):
    baseline, _ = dirs
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run_dirs = publish_wandb("team/peft-bench/baseline-v1", baseline)
    assert len(run_dirs) == len(list(baseline.glob("*.json")))
    for d in run_dirs:
        assert Path(d).name.startswith("offline-run-")
        assert b"baseline-v1" in _flushed(next(Path(d).glob("run-*.wandb")), b"baseline-v1")


def _flushed(path: Path, needle: bytes, seconds: float = 30.0) -> bytes:
    """wandb's service may still be writing the log right after finish()."""
    import time
    deadline = time.time() + seconds
    while True:
        data = path.read_bytes()
        if needle in data or time.time() > deadline:
            return data
        time.sleep(0.5)


def test_wandb_config_values_are_unwrapped():
    rec = json.loads((FIXTURES / LORA_ARITH).read_text())
    config = {k: {"value": v, "desc": None} for k, v in rec["run_info"]["config"].items()}  # W&B's wrapped form
    back = record_from_wandb("x", config, {"status": "ok", "eval/gsm8k/accuracy": 25.0, "eval/gsm8k/n": 4})
    assert back.run_info.config == rec["run_info"]["config"]
    assert back.eval["gsm8k"].model_dump(exclude_unset=True) == {"scoring": rec["run_info"]["config"]["eval"]["scoring"], "accuracy": 25.0, "n": 4}


def test_module_entry_point_exit_status(dirs):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["aqua"].update(accuracy=0.0, n=500))
    edit(baseline / LORA_ARITH, lambda r: r["eval"]["aqua"].update(n=500))
    done = subprocess.run([sys.executable, "-m", "harness.regress", "--baseline", str(baseline),
                           "--current", str(current)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "| FAIL" in done.stdout and "-> FAIL" in done.stdout


def test_a_saved_baseline_carries_its_records_code_and_a_studys_selection(dirs, tmp_path):
    _, current = dirs
    for p in (current / "runs").glob("*.json"):  # records made by some earlier code
        edit(p, lambda r: r["meta_info"].update(code={"code_id": "0123456789ab", "source_sha256": "x"}))
    (current / "selection.json").write_text(json.dumps({"selection": {"lora": {"chosen_lr": 6e-4}}}))
    target = tmp_path / "baselines" / "study"
    assert regress.main(["--save", str(target), "--current", str(current), "study=cpu-study"]) == 0
    meta = json.loads((target / "baseline.json").read_text())
    assert meta["overrides"] == ["study=cpu-study"] and meta["code"]["code_id"] == "0123456789ab"
    assert json.loads((target / "selection.json").read_text())["selection"]["lora"]["chosen_lr"] == 6e-4
    assert len(list((target / "runs").glob("*.json"))) == len(list(FIXTURES.glob("*.json")))


def test_a_study_baseline_is_rerun_as_a_study(tmp_path, monkeypatch):
    from harness.regress import sources
    seen = []
    monkeypatch.setattr(sources.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or SimpleNamespace(returncode=0))
    sources.run_sweep(["study=cpu-study"], tmp_path / "out", "/cache")
    sources.run_sweep(["sweep=default"], tmp_path / "out", "/cache")
    assert seen[0][1:4] == ["-m", "harness.study", "study=cpu-study"] and f"study.results_dir={tmp_path / 'out'}" in seen[0]
    assert seen[1][1:4] == ["-m", "harness", "-m"] and f"results_dir={tmp_path / 'out'}" in seen[1]
    assert all("reuse=same_code" in cmd and "cache_dir=/cache" in cmd for cmd in seen)
