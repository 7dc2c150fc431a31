"""The environment a run saw: package versions, git commit, device, command line. Never secrets:
the command line is recorded redacted (harness.secrets), since an override may carry a token."""
from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path

import torch

from harness import secrets

PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "hydra-core",
            "omegaconf", "gguf", "safetensors", "tokenizers", "liger-kernel", "wandb", "pandas")
REPO = Path(__file__).resolve().parents[1]


def versions() -> dict:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


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
    return info


def environment(device: torch.device) -> dict:
    return {"versions": versions(), **git_state(), **device_info(device), "argv": secrets.redact_argv(sys.argv[1:])}
