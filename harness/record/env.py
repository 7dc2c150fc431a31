"""The environment a run saw: package versions, git commit, device, command line. Never secrets:
the command line is recorded redacted (harness.config.secrets), since an override may carry a token."""
from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import torch

from harness.config import secrets
from harness.record.digest import json_digest

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "hydra-core",
            "omegaconf", "gguf", "safetensors", "tokenizers", "liger-kernel", "wandb", "pandas")
REPO = Path(__file__).resolve().parents[2]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


# What decides the numbers a run computes: the harness's sources, configs and shipped data, and
# the packages doing the arithmetic (not wandb or pandas, which only carry and show them).
SOURCE_ROOTS = ("harness", "conf", "hydra_plugins", "pyproject.toml")
COMPUTE_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "tokenizers", "safetensors",
                    "gguf", "datasets")


# The shipped data files are represented by harness/data/manifest.json, which holds each one's sha256:
# every read is checked against it (harness.data), so hashing the manifest is hashing the data.
SHIPPED_DATA = REPO / "harness" / "data"


def source_files() -> list[Path]:
    out = []
    for root in SOURCE_ROOTS:
        path = REPO / root
        if path.is_file():
            out.append(path)
        elif path.is_dir():
            out += [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                    and not p.name.endswith((".pyc", ".egg-info")) and ".egg-info" not in str(p)
                    and not (p.name.endswith(".json.gz") and p.is_relative_to(SHIPPED_DATA))]
    return sorted(out)


@lru_cache(maxsize=1)
def source_sha256() -> str:
    """One hash over every source file's path and bytes: equal for two checkouts of the same code,
    whatever git says (a dirty tree, an export without .git), different after any edit."""
    h = hashlib.sha256()
    for path in source_files():
        h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_identity() -> dict:
    """Which code made a record: `code_id` (12 hex) hashes the sources and the compute packages'
    versions, so a record is reused only by the code that made it (harness.pipeline.runner)."""
    compute = {"python": platform.python_version(), **{k: v for k, v in versions().items() if k in COMPUTE_PACKAGES}}
    source = source_sha256()
    code_id = json_digest({"source": source, "versions": compute}, 12)
    return {"code_id": code_id, "source_sha256": source, "compute_versions": compute, **git_state()}


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    try:
        sha = git("rev-parse", "HEAD")
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_sha": sha.stdout.strip(), "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def device_info(device: torch.device) -> dict:
    info = {"device_type": device.type, "platform": platform.platform(), "cpu": platform.processor() or
            platform.machine(), "cpu_count": torch.get_num_threads(), "torch_cuda": torch.version.cuda}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device_name=props.name, device_memory_gib=round(props.total_memory / 1024 ** 3, 2),
                    cuda_capability=f"{props.major}.{props.minor}")
    else:
        info["device_name"] = "cpu"
    info["cpu_model"] = cpu_model()
    return info


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string: CPU speeds are only
    comparable on the same model."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    return {"versions": versions(), **git_state(), "code": code_identity(), **device_info(device),
            "argv": secrets.redact_argv(sys.argv[1:])}
