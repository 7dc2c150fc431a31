"""A process killed while writing leaves the previous file (or none), never a truncated one."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

KILL_DURING_WRITE = """
import os, sys
from pathlib import Path
from harness.record import atomic
target = Path(sys.argv[1])
real_fsync = os.fsync
def die(fd):  # the data is in the temp file, the rename has not happened: kill -9 now
    os.kill(os.getpid(), 9)
os.fsync = die
{call}
"""


@pytest.mark.parametrize("existing", [None, {"status": "ok", "run_id": "old"}])
def test_kill_9_while_writing_a_record_leaves_no_truncated_file(tmp_path, existing):
    target = tmp_path / "runs" / "r.json"
    if existing is not None:
        target.parent.mkdir(parents=True)
        target.write_text(json.dumps(existing))
    code = KILL_DURING_WRITE.format(call='atomic.write_json(target, {"status": "ok", "blob": "x" * 5_000_000})')
    done = subprocess.run([sys.executable, "-c", code, str(target)], cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == -9
    if existing is None:
        assert not target.exists()
    else:
        assert json.loads(target.read_text()) == existing  # the old record, whole


def test_kill_9_while_saving_a_checkpoint_keeps_the_old_one(tmp_path):
    target = tmp_path / "checkpoints" / "run"
    target.mkdir(parents=True)
    (target / "weights").write_text("old")
    code = """
import os, sys
from pathlib import Path
from harness.record import atomic
def fill(d):
    Path(d, "weights").write_text("half")
    os.kill(os.getpid(), 9)
atomic.replace_dir(Path(sys.argv[1]), fill)
"""
    done = subprocess.run([sys.executable, "-c", code, str(target)], cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == -9
    assert (target / "weights").read_text() == "old"
