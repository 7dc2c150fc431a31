"""The regression gate on fixture record directories: pass when identical, fail on an accuracy drop
or memory growth beyond tolerance, pass within it, never fail on another device's timings, exit 2
on bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import regress
from harness.report.aggregate import flatten

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


def gate(baseline: Path, current: Path, capsys, *args) -> tuple[int, str, str]:
    code = regress.main(["--baseline", str(baseline), "--current", str(current), *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def result_of(stdout: str, method: str, task: str, metric: str) -> str:
    """The result column of one comparison row of the printed Markdown table."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 12 and cells[1] == method and cells[2] == task and cells[7] == metric:
            return cells[12]
    raise AssertionError(f"no row {method} {task} {metric} in:\n{stdout}")


def test_identical_results_pass(dirs, capsys):
    code, out, _ = gate(*dirs, capsys)
    assert code == 0
    assert "FAIL" not in out.split("\n\nregress:")[0] and "-> PASS" in out
    assert result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS"
    assert result_of(out, "lora", "arithmetic", "peak train mem (GiB)") == "PASS"


def test_accuracy_drop_of_5_points_fails(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["gsm8k"].update(accuracy=20.0))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1
    assert result_of(out, "lora", "arithmetic", "acc gsm8k") == "FAIL"
    assert "-5.00 pts" in out
    assert result_of(out, "lora", "arithmetic", "acc avg") == "PASS"  # 5/7 points on the average
    assert result_of(out, "lora", "arithmetic", "acc svamp") == "PASS"


def test_drop_within_tolerance_passes(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["gsm8k"].update(accuracy=24.5))
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "arithmetic", "acc gsm8k") == "PASS"
    assert gate(baseline, current, capsys, "--acc-drop", "0.4")[0] == 1  # a tighter tolerance catches it


def test_seed_means_are_compared(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / "tiny-random__bitfit__arithmetic__s1__3e28fe35ab.json",
         lambda r: r["eval"]["gsm8k"].update(accuracy=19.0))  # -6 on one seed of 3: -2 on the mean
    code, out, _ = gate(baseline, current, capsys)
    assert code == 1 and "-2.00 pts" in out


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


def test_missing_run_is_reported_and_fails_with_require_all(dirs, capsys):
    baseline, current = dirs
    (current / "runs" / LORA_COMMON).unlink()
    code, out, _ = gate(baseline, current, capsys)
    assert code == 0 and result_of(out, "lora", "commonsense", "run") == "MISSING"
    assert "nan" not in out.lower()  # a missing value reads as missing, not as a number
    assert gate(baseline, current, capsys, "--require-all")[0] == 1


def test_runs_not_ok_in_current_are_missing_not_compared(dirs, capsys):
    baseline, current = dirs
    edit(current / "runs" / LORA_COMMON, lambda r: r.update(status="oom", error="OutOfMemoryError"))
    code, out, _ = gate(baseline, current, capsys, "--require-all")
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
    with pytest.raises(SystemExit) as exc:
        regress.main(["--baseline", str(baseline), "--acc-drop", "-1"])
    assert exc.value.code == 2


def test_wandb_summary_becomes_a_comparable_record():
    """The W&B path cannot run offline; its conversion of a run's config and summary can."""
    rec = json.loads((FIXTURES / LORA_ARITH).read_text())
    summary = {"status": "ok", **{f"eval/{s}/accuracy": m["accuracy"] for s, m in rec["eval"].items()},
               **{f"eval/{s}/parse_failure_rate": m["parse_failure_rate"] for s, m in rec["eval"].items()},
               "throughput/tokens_per_second": rec["train_info"]["throughput"]["tokens_per_second"],
               "memory/train/peak_rss_gib": rec["memory"]["train"]["peak_rss_gib"]}
    config = {k: {"value": v} for k, v in rec["run_info"]["config"].items()}  # W&B's wrapped form
    from_wandb = flatten(regress.record_from_wandb(rec["run_id"], config, summary, {"cpu_count": 2}))
    rows = regress.compare([from_wandb], [flatten(rec)])
    accs = [r for r in rows if r["metric"].startswith("acc")]
    assert len(accs) == 8 and all(r["result"] == "PASS" for r in accs)
    # W&B metadata does not identify the CPU as the record does: timings are not compared
    assert {r["result"] for r in rows if not r["metric"].startswith("acc")} == {"SKIP"}


def test_module_entry_point_exit_status(dirs):
    baseline, current = dirs
    edit(current / "runs" / LORA_ARITH, lambda r: r["eval"]["aqua"].update(accuracy=20.0))
    done = subprocess.run([sys.executable, "-m", "harness.regress", "--baseline", str(baseline),
                           "--current", str(current)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "| FAIL" in done.stdout and "-> FAIL" in done.stdout
