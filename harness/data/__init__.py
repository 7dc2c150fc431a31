"""The data files shipped with the harness, and the paper's files fetched on demand.

Shipped: harness/data/{test,train}/<name>.json.gz with manifest.json (records, sha256 of the
uncompressed JSON, source, license); every read is checked against the manifest. Remote: the
LLM-Adapters training sets (math_10k, commonsense_170k, ...) and the exact HellaSwag test file,
fetched from GitHub on first use, verified by git blob SHA-1 and cached.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from functools import lru_cache
from pathlib import Path

from datasets import Dataset

from harness.errors import DataError
from harness.record.atomic import write_bytes as atomic_write_bytes

DATA_DIR = Path(__file__).resolve().parent
FIELDS = ("instruction", "input", "output", "answer")
LLM_ADAPTERS_RAW = "https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/main/"

# The paper's files that are too big for the offline snapshot, with the git blob SHA-1 any copy
# must hash to (see MANIFEST.md, "Missing").
REMOTE_FILES = {
    "math_10k": ("ft-training_set/math_10k.json", "27dba77d6ed80aa118d78fbafa5cecd651f6d463"),
    "math_7k": ("ft-training_set/math_7k.json", "fd93bf268b53bb644b38e71270cdf633951ba3e0"),
    "math_14k": ("ft-training_set/math_14k.json", "7dc3a2312d83bd5cd6388ecd5d530f2ff6ed1ad6"),
    "math_50k": ("ft-training_set/math_50k.json", "61fcf3e08fc90a922be320441019d6022e25f5d0"),
    "commonsense_170k": ("ft-training_set/commonsense_170k.json", "529e426b33d4cdb1d0c4a275a1a7245ad081fd91"),
    "commonsense_15k": ("ft-training_set/commonsense_15k.json", "3716afef6d384c475dba13f88a5a96c8032dafe2"),
    "hellaswag_exact": ("dataset/hellaswag/test.json", "183c4920415f83ba4b793c4873a33e7e10bd1be5"),
}


@lru_cache(maxsize=1)
def manifest() -> dict:
    path = DATA_DIR / "manifest.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read the data manifest {path}: {exc}. Reinstall the package "
                        "(pip install -e .) or rebuild it with tools/package_data.py.") from exc


# A test item needs a question and a gold answer; a training example also the response it teaches.
TEST_FIELDS = ("instruction", "answer")
TRAIN_FIELDS = ("instruction", "output", "answer")


def validate_records(records, origin: str, required: tuple = TEST_FIELDS) -> list[dict]:
    """Check the LLM-Adapters record format; name the file and the record on any defect."""
    if not isinstance(records, list):
        raise DataError(f"{origin}: expected a JSON list of records, got {type(records).__name__}")
    if not records:
        raise DataError(f"{origin}: the file holds no records")
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{origin}: record {i} is not an object")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"{origin}: record {i} lacks field(s) {missing}; every record needs "
                            f"{', '.join(repr(k) for k in required)} (and usually 'input')")
        for k in FIELDS:
            if k in rec and not isinstance(rec[k], str):
                raise DataError(f"{origin}: record {i} field '{k}' is {type(rec[k]).__name__}, expected a string")
        if "output" in required and not rec["output"].strip():
            raise DataError(f"{origin}: record {i} has an empty 'output': a training example needs the response "
                            f"it teaches")
    return [{k: rec.get(k, "") for k in FIELDS} for rec in records]


def read_json_records(path: Path, expected_sha256: str | None = None,
                      required: tuple = TEST_FIELDS) -> tuple[list[dict], str]:
    """Read a (possibly gzipped) JSON list of records; return the records and the sha256 of the JSON."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read data file {path}: {exc}") from exc
    digest = hashlib.sha256(raw).hexdigest()
    if expected_sha256 and digest != expected_sha256:
        raise DataError(f"{path}: sha256 {digest[:12]}… does not match the manifest "
                        f"({expected_sha256[:12]}…); the file is damaged: reinstall or rerun tools/package_data.py")
    try:
        records = json.loads(raw)
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    return validate_records(records, str(path), required), digest


def shipped(name: str) -> tuple[list[dict], dict]:
    """A shipped file by manifest name ('test/gsm8k', 'train/boolq_train'): records and its manifest entry."""
    files = manifest()["files"]
    if name not in files:
        raise DataError(f"no shipped data file '{name}'; known: {sorted(files)}")
    entry = files[name]
    path = DATA_DIR / entry["path"]
    try:
        stat = path.stat()
    except OSError as exc:
        raise DataError(f"data file not found: {path} (reinstall the package)") from exc
    required = TRAIN_FIELDS if name.startswith("train/") else TEST_FIELDS
    return _read_cached(str(path), entry["sha256"], stat.st_mtime_ns, stat.st_size, required), entry


@lru_cache(maxsize=32)
def _read_cached(path: str, sha256: str, mtime_ns: int, size: int, required: tuple = TEST_FIELDS) -> list[dict]:
    """A sweep reads the same files for every run: parse each once per process (keyed on the
    file's identity, so a changed file is read again). Callers must not modify the records."""
    return read_json_records(Path(path), sha256, required)[0]


def read_local(path: str | Path) -> tuple[list[dict], str]:
    """A user's training file (records, sha256), checked as training data; parsed once per process
    as long as the file does not change (the up-front check and the run read the same parse)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    stat = path.stat()
    return _read_local_cached(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_local_cached(path: str, mtime_ns: int, size: int) -> tuple[list[dict], str]:
    return read_json_records(Path(path), required=TRAIN_FIELDS)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# pooch retries a download that failed (a reset connection, a 5xx) with a growing pause
DOWNLOAD_RETRIES = 3


def download(relpath: str, folder: Path, timeout: float, retries: int = DOWNLOAD_RETRIES) -> bytes:
    """One file of LLM-Adapters' repository, fetched by pooch into a scratch folder (removed after:
    the caller verifies the bytes before anything lands in the cache)."""
    import logging
    import shutil
    import tempfile

    import pooch
    logger = pooch.get_logger()
    for handler in list(logger.handlers):  # pooch's own stderr handler: its lines go to the run's log instead
        logger.removeHandler(handler)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        fetcher = pooch.create(path=scratch, base_url=LLM_ADAPTERS_RAW, registry={relpath: None},
                               retry_if_failed=retries)
        path = fetcher.fetch(relpath, downloader=pooch.HTTPDownloader(timeout=timeout, progressbar=False))
        logging.getLogger("harness.data").info("downloaded %s%s", LLM_ADAPTERS_RAW, relpath)
        return Path(path).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def cached_remote(name: str, cache_dir: str | Path) -> Path | None:
    """Where one of the paper's files lies once fetched (None before its first download)."""
    cached = Path(cache_dir) / "llm_adapters" / REMOTE_FILES[name][0]
    return cached if cached.is_file() else None


def remote(name: str, cache_dir: str | Path, timeout: float = 30.0,
           retries: int = DOWNLOAD_RETRIES) -> tuple[list[dict], dict]:
    """One of the paper's files from the LLM-Adapters repository, cached and verified by blob SHA-1."""
    relpath, blob = REMOTE_FILES[name]
    root = Path(cache_dir) / "llm_adapters"
    cached = root / relpath
    if cached_remote(name, cache_dir) is None:
        url = LLM_ADAPTERS_RAW + relpath
        try:
            data = download(relpath, root, timeout, retries)
        except OSError as exc:  # requests' errors are OSErrors too
            raise DataError(
                f"cannot download {url} ({exc}). '{name}' is one of the paper's files and needs internet "
                f"access once; or place a copy at {cached}. Offline, use the shipped sets "
                f"(task.train_set=math_offline / commonsense_offline).") from exc
        if git_blob_sha1(data) != blob:
            raise DataError(f"{url}: git blob SHA-1 {git_blob_sha1(data)} != expected {blob}; not cached")
        atomic_write_bytes(cached, data)
    data = cached.read_bytes()
    if git_blob_sha1(data) != blob:
        raise DataError(f"{cached}: git blob SHA-1 does not match {blob}; delete the file to refetch it")
    records = validate_records(json.loads(data), str(cached), TEST_FIELDS if relpath.startswith("dataset/")
                               else TRAIN_FIELDS)
    return records, {"path": str(cached), "records": len(records), "sha256": hashlib.sha256(data).hexdigest(),
                     "source": f"LLM-Adapters {relpath} (blob {blob})", "approximate": False}


def to_dataset(records: list[dict]) -> Dataset:
    """Validated records as a `datasets.Dataset` (shuffled and selected for training)."""
    return Dataset.from_list(records)
