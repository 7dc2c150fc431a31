"""Shipped data, the manifest, record validation and training sets (the paper's remote files:
test_data_remote.py)."""
from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest

from harness import data, tasks
from harness.errors import ConfigError, DataError

TEST_COUNTS = {
    "gsm8k": 1319, "svamp": 1000, "multiarith": 600, "addsub": 395, "aqua": 254, "singleeq": 508,
    "mawps": 238, "boolq": 3270, "piqa": 1838, "siqa": 1954, "hellaswag": 10042, "winogrande": 1267,
    "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500,
}
TRAIN_COUNTS = {
    "gsm8k_train": 7473, "mawps_asdiv_train": 1401, "aqua_dev_train": 254, "boolq_train": 9427,
    "arc_easy_train": 2251, "arc_challenge_train": 1119, "openbookqa_train": 4957,
}
@lru_cache(maxsize=None)
def shipped(name):
    return data.shipped(name)


def record(i=0, **kw):
    r = {"instruction": f"q{i}", "input": "", "output": f"The answer is {i}.", "answer": str(i)}
    r.update(kw)
    return r


def write_json(path: Path, obj, gz=False) -> Path:
    raw = json.dumps(obj).encode()
    path.write_bytes(gzip.compress(raw, mtime=0) if gz else raw)
    return path


# ---- the manifest and the shipped files ------------------------------------------------------

def test_manifest_lists_exactly_the_files_on_disk():
    m = data.manifest()
    assert m["source_snapshot"] == "AGI-Edgerunners/LLM-Adapters@816657208af4db747803f87ba40a4c71383fed7a"
    files = m["files"]
    assert set(files) == {f"test/{n}" for n in TEST_COUNTS} | {f"train/{n}" for n in TRAIN_COUNTS}
    on_disk = {p.relative_to(data.DATA_DIR).as_posix() for p in data.DATA_DIR.glob("t*/*.json.gz")}
    assert on_disk == {e["path"] for e in files.values()}
    for name, e in files.items():
        assert e["path"] == f"{name}.json.gz"
        assert {"path", "records", "sha256", "source", "license", "approximate"} <= set(e)


@pytest.mark.parametrize("name", sorted(json.loads((data.DATA_DIR / "manifest.json").read_text())["files"]))
def test_shipped_file_matches_manifest(name):
    entry = data.manifest()["files"][name]
    raw = gzip.decompress((data.DATA_DIR / entry["path"]).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]  # checked independently of the harness
    records, meta = shipped(name)
    assert meta == entry
    assert len(records) == entry["records"] == len(json.loads(raw))
    assert all(set(r) == set(data.FIELDS) and all(isinstance(v, str) for v in r.values()) for r in records)


@pytest.mark.parametrize("name,count", sorted(TEST_COUNTS.items()))
def test_test_set_counts(name, count):
    records, meta = shipped(f"test/{name}")
    assert len(records) == meta["records"] == count
    assert meta["approximate"] is (name == "hellaswag")


def test_registered_test_sets_are_the_shipped_ones():
    assert set(tasks.all_test_sets()) == set(TEST_COUNTS)
    assert set(tasks.get_family("arithmetic").test_sets) == {
        "gsm8k", "svamp", "multiarith", "addsub", "aqua", "singleeq", "mawps"}


def test_families_complete_after_direct_module_import():
    code = """
        import harness.tasks.arithmetic
        from harness import tasks
        tasks.get_family("commonsense")
        assert len(tasks.all_test_sets()) == 15
        """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_unknown_shipped_name():
    with pytest.raises(DataError, match="test/gsm8k"):
        data.shipped("test/gsm8k_v2")


# ---- malformed files -------------------------------------------------------------------------

def test_missing_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(DataError, match="not found") as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("gz", [False, True])
def test_empty_list(tmp_path, gz):
    path = write_json(tmp_path / ("empty.json.gz" if gz else "empty.json"), [], gz=gz)
    with pytest.raises(DataError, match="no records") as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"not json at all", b'[{"instruction": "q", "answer": "1"}', b'["\xc3\x28"]', b""])
def test_not_json(tmp_path, content):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(DataError, match="not valid JSON") as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


def test_not_a_list(tmp_path):
    path = write_json(tmp_path / "obj.json", {"instruction": "q", "answer": "1"})
    with pytest.raises(DataError, match="expected a JSON list") as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


def test_record_not_an_object(tmp_path):
    path = write_json(tmp_path / "strs.json", [record(0), "just a string"])
    with pytest.raises(DataError, match="record 1 is not an object"):
        data.read_json_records(path)


def test_record_lacking_answer(tmp_path):
    recs = [record(i) for i in range(5)]
    del recs[3]["answer"]
    path = write_json(tmp_path / "train.json", recs)
    with pytest.raises(DataError) as err:
        data.read_json_records(path)
    msg = str(err.value)
    assert str(path) in msg and "record 3" in msg and "answer" in msg


def test_record_lacking_instruction(tmp_path):
    recs = [record(i) for i in range(2)]
    del recs[1]["instruction"]
    with pytest.raises(DataError, match="record 1 .*instruction"):
        data.read_json_records(write_json(tmp_path / "t.json", recs))


@pytest.mark.parametrize("field,value,typename", [("answer", 5, "int"), ("input", None, "NoneType"),
                                                  ("output", ["a"], "list"), ("instruction", 1.5, "float")])
def test_non_string_field(tmp_path, field, value, typename):
    recs = [record(0), record(1)]
    recs[1][field] = value
    path = write_json(tmp_path / "t.json", recs)
    with pytest.raises(DataError) as err:
        data.read_json_records(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and f"'{field}'" in msg and typename in msg


def test_valid_file_is_normalised(tmp_path):
    recs = [{"instruction": "q", "answer": "1", "extra": "dropped"}, record(2)]
    path = write_json(tmp_path / "ok.json.gz", recs, gz=True)
    got, digest = data.read_json_records(path)
    assert got == [{"instruction": "q", "input": "", "output": "", "answer": "1"}, record(2)]
    assert digest == hashlib.sha256(json.dumps(recs).encode()).hexdigest()  # of the uncompressed JSON


def _gz(path: Path, payload: bytes) -> Path:
    path.write_bytes(payload)
    return path


GOOD_GZ = gzip.compress(json.dumps([record(i) for i in range(50)]).encode(), mtime=0)


@pytest.mark.parametrize("kind,payload", [
    ("not gzip", b"plain text, not gzip"),
    ("truncated", GOOD_GZ[: len(GOOD_GZ) // 2]),
    ("crc", GOOD_GZ[:-8] + bytes([GOOD_GZ[-8] ^ 0xFF]) + GOOD_GZ[-7:]),
    ("length", GOOD_GZ[:-4] + bytes([GOOD_GZ[-4] ^ 0xFF]) + GOOD_GZ[-3:]),
])
def test_corrupt_gzip(tmp_path, kind, payload):
    path = _gz(tmp_path / "c.json.gz", payload)
    with pytest.raises(DataError) as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


def test_corrupt_deflate_stream(tmp_path):
    # valid gzip header, then a deflate block of the reserved type 11 (invalid)
    header = gzip.compress(b"", mtime=0)[:10]
    path = _gz(tmp_path / "d.json.gz", header + b"\x07" + b"\x00" * 16)
    with pytest.raises(DataError) as err:
        data.read_json_records(path)
    assert str(path) in str(err.value)


def test_sha_mismatch(tmp_path):
    path = write_json(tmp_path / "s.json.gz", [record(0)], gz=True)
    good = hashlib.sha256(json.dumps([record(0)]).encode()).hexdigest()
    assert data.read_json_records(path, expected_sha256=good)[1] == good
    with pytest.raises(DataError, match="sha256") as err:
        data.read_json_records(path, expected_sha256="0" * 64)
    assert str(path) in str(err.value)


def test_shipped_detects_damaged_file(tmp_path, monkeypatch):
    """A shipped file whose bytes no longer match the manifest is refused, naming the file."""
    fake_dir = tmp_path / "pkg"
    (fake_dir / "test").mkdir(parents=True)
    write_json(fake_dir / "test" / "gsm8k.json.gz", [record(0)], gz=True)
    real = data.manifest()
    monkeypatch.setattr(data, "manifest", lambda: real)
    monkeypatch.setattr(data, "DATA_DIR", fake_dir)
    with pytest.raises(DataError, match="gsm8k.json.gz"):
        data.shipped("test/gsm8k")


# ---- training sets ---------------------------------------------------------------------------

@pytest.mark.parametrize("family,name,count,parts", [
    ("arithmetic", "math_offline", 9128, ["train/gsm8k_train", "train/mawps_asdiv_train", "train/aqua_dev_train"]),
    ("commonsense", "commonsense_offline", 17754,
     ["train/boolq_train", "train/arc_easy_train", "train/arc_challenge_train", "train/openbookqa_train"]),
    ("arithmetic", "gsm8k_train", 7473, ["train/gsm8k_train"]),
])
def test_offline_train_sets(tmp_path, family, name, count, parts):
    tr = tasks.get_family(family).train_set(name)
    assert tr.remote is None and tr.contaminates == ()
    records, provenance = tasks.load_train_set(tr, str(tmp_path))
    assert len(records) == count
    assert [p["name"] for p in provenance] == parts
    assert sum(p["records"] for p in provenance) == count
    assert list(tmp_path.iterdir()) == []  # nothing cached, nothing fetched


def test_contamination_flags():
    arith = tasks.get_family("arithmetic")
    assert set(arith.train_set("math_10k").contaminates) == {"addsub", "multiarith", "singleeq"}
    for name in ("math_offline", "gsm8k_train", "math_7k", "math_14k"):
        assert arith.train_set(name).contaminates == ()
    assert arith.paper_average == ("gsm8k", "aqua", "mawps", "svamp")


def test_unknown_train_set():
    with pytest.raises(ConfigError, match="math_offline"):
        tasks.get_family("arithmetic").train_set("math_100k")
