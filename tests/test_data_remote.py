"""The paper's remote files and the exact HellaSwag file (offline: no test touches the network;
requests.get, what pooch downloads with, is replaced where a download would happen)."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import requests

from harness import data, tasks
from harness.errors import ConfigError, DataError


def record(i=0, **kw):
    r = {"instruction": f"q{i}", "input": "", "output": f"The answer is {i}.", "answer": str(i)}
    r.update(kw)
    return r


# ---- remote files ----------------------------------------------------------------------------

def _offline(*args, **kwargs):
    raise requests.exceptions.ConnectionError("[Errno -2] Name or service not known")


def _no_network(*args, **kwargs):
    raise AssertionError("the network must not be touched here")


class _Resp:
    """What pooch's HTTP downloader reads of a requests response."""

    def __init__(self, payload: bytes):
        self.payload, self.headers = payload, {"content-length": str(len(payload))}

    def raise_for_status(self):
        pass

    def iter_content(self, chunk_size=1024):
        return (self.payload[i:i + chunk_size] for i in range(0, len(self.payload), chunk_size))


@pytest.fixture
def web(monkeypatch):
    """Replaces requests.get (what pooch downloads with) and pooch's pause between retries."""
    import pooch.core
    monkeypatch.setattr(pooch.core.time, "sleep", lambda seconds: None)

    def serve(fake):
        monkeypatch.setattr(requests, "get", fake)
    return serve


def test_remote_blob_table_matches_manifest_doc():
    """data.REMOTE_FILES (what a download is checked against) and MANIFEST.md's "Missing" table
    (what was recorded when the data was gathered) are written independently: a wrong hash or path
    in either fails here."""
    text = (Path(data.__file__).parent / "MANIFEST.md").read_text()
    missing = text.split("\n## Missing", 1)[1].split("\n## ", 1)[0]
    # rows with one full blob hash (the last row lists four components by abbreviated hashes)
    documented = dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{40})` \|", missing, flags=re.M))
    assert len(documented) >= 7, missing  # the table was parsed, not silently skipped
    assert {path: blob for path, blob in data.REMOTE_FILES.values()} == documented


def test_git_blob_sha1():
    assert data.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert data.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"


def test_remote_offline_names_the_offline_alternative(tmp_path, web):
    web(_offline)
    with pytest.raises(DataError) as err:
        data.remote("math_10k", tmp_path, timeout=2)
    msg = str(err.value)
    assert "math_offline" in msg and "commonsense_offline" in msg
    assert str(tmp_path / "llm_adapters" / "ft-training_set" / "math_10k.json") in msg  # where to place a copy
    assert not any(tmp_path.rglob("*.json"))  # nothing cached


@pytest.mark.parametrize("name", ["math_10k", "commonsense_170k"])
def test_remote_train_set_offline(tmp_path, web, name):
    web(_offline)
    family = "arithmetic" if name.startswith("math") else "commonsense"
    with pytest.raises(DataError, match="offline|Offline"):
        tasks.load_train_set(tasks.get_family(family).train_set(name), str(tmp_path))


def test_cached_file_with_wrong_blob_is_rejected(tmp_path, web):
    web(_no_network)
    cached = tmp_path / "llm_adapters" / "ft-training_set" / "math_10k.json"
    cached.parent.mkdir(parents=True)
    cached.write_text(json.dumps([record(0)]))
    with pytest.raises(DataError, match="SHA-1") as err:
        data.remote("math_10k", tmp_path, timeout=2)
    assert str(cached) in str(err.value)


def test_download_with_wrong_blob_is_not_cached(tmp_path, web):
    web(lambda *a, **k: _Resp(json.dumps([record(0)]).encode()))
    with pytest.raises(DataError, match="not cached"):
        data.remote("math_7k", tmp_path, timeout=2)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nor left half-way in a scratch folder


def test_remote_download_verify_cache(tmp_path, monkeypatch, web):
    payload = json.dumps([record(0), record(1)]).encode()
    monkeypatch.setitem(data.REMOTE_FILES, "tiny", ("ft-training_set/tiny.json", data.git_blob_sha1(payload)))
    calls = []

    def flaky(url, timeout=None, **kwargs):  # the first attempt fails: pooch tries again
        calls.append((url, timeout))
        if len(calls) == 1:
            raise requests.exceptions.ConnectionError("connection reset by peer")
        return _Resp(payload)

    web(flaky)
    records, meta = data.remote("tiny", tmp_path, timeout=2)
    assert calls == [(data.LLM_ADAPTERS_RAW + "ft-training_set/tiny.json", 2)] * 2
    cached = tmp_path / "llm_adapters" / "ft-training_set" / "tiny.json"
    assert cached.read_bytes() == payload
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [cached]  # no scratch copy left
    assert records == [record(0), record(1)]
    assert meta["records"] == 2 and meta["approximate"] is False
    assert meta["sha256"] == hashlib.sha256(payload).hexdigest()

    web(_no_network)  # second read: from the cache
    assert data.remote("tiny", tmp_path, timeout=2)[0] == records


def test_a_download_failing_every_retry_is_one_clear_error(tmp_path, web):
    calls = []

    def down(url, timeout=None, **kwargs):
        calls.append(url)
        raise requests.exceptions.ConnectionError("Name or service not known")

    web(down)
    with pytest.raises(DataError, match="cannot download .*needs internet access once"):
        data.remote("math_10k", tmp_path, timeout=2)
    assert len(calls) == 1 + data.DOWNLOAD_RETRIES


# ---- HellaSwag variants ----------------------------------------------------------------------

@pytest.fixture
def hellaswag(monkeypatch):
    monkeypatch.setattr(tasks, "_UNREACHABLE", set())
    return tasks.get_family("commonsense").test_set("hellaswag")


def test_hellaswag_approx(tmp_path, web, hellaswag):
    web(_no_network)
    records, meta = tasks.load_test_set(hellaswag, str(tmp_path), variant="approx")
    assert len(records) == 10042 and meta["approximate"] is True and meta["variant"] == "approx"


def test_hellaswag_exact_offline_raises(tmp_path, web, hellaswag):
    web(_offline)
    with pytest.raises(DataError):
        tasks.load_test_set(hellaswag, str(tmp_path), variant="exact")


def test_hellaswag_auto_offline_falls_back(tmp_path, web, hellaswag):
    attempts = []
    web(lambda *a, **k: attempts.append(1) or _offline())
    records, meta = tasks.load_test_set(hellaswag, str(tmp_path), variant="auto")
    assert len(records) == 10042 and meta["variant"] == "approx"
    assert len(attempts) == 1  # a fallback exists: no retries
    web(_no_network)  # not retried in this process
    assert tasks.load_test_set(hellaswag, str(tmp_path), variant="auto")[1]["variant"] == "approx"


def test_exact_sets_need_no_network(tmp_path, web):
    web(_no_network)
    ts = tasks.get_family("commonsense").test_set("piqa")
    records, meta = tasks.load_test_set(ts, str(tmp_path), variant="auto")
    assert len(records) == 1838 and meta["variant"] == "exact" and meta["approximate"] is False


def test_bad_variant(tmp_path, hellaswag):
    with pytest.raises(ConfigError, match="auto, exact or approx"):
        tasks.load_test_set(hellaswag, str(tmp_path), variant="fast")
