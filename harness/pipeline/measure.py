"""Honest measurement helpers: synchronised timers and per-phase peak memory.

CUDA: peak allocated / reserved via torch.cuda, reset at the start of each phase.
CPU: peak resident set size (VmHWM), reset per phase by writing 5 to /proc/self/clear_refs (Linux).
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

import torch

GIB = 1024 ** 3


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """perf_counter after the device finished its queued work."""
    sync(device)
    return time.perf_counter()


# The host's own speed, measured beside each training phase: on a shared machine (a cloud VM, a
# laptop on battery) the same code trains 20-30% slower on one day than another (measured on the 2-core
# EPYC: 188 and 147 tokens/s, same commit, two days apart), so the regression gate compares tokens/s
# per unit of this speed, not raw. A fixed matrix product the size of a small model's projections:
# fp32 on a CPU (what a CPU run trains in unless bf16 is fast), bf16 on a GPU.
HOST_GEMM = (512, 576, 1536)


def host_gflops(device: torch.device, windows: int = 5, seconds: float = 0.03) -> float:
    """GFLOP/s of HOST_GEMM on `device`: the median of `windows` timings of about `seconds` each, after
    a warm-up as long as two of them (the first products also wake the thread pool)."""
    m, k, n = HOST_GEMM
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rng = torch.Generator(device=device).manual_seed(0)  # its own: the run's random streams stay untouched
    a = torch.randn(m, k, device=device, dtype=dtype, generator=rng)
    b = torch.randn(k, n, device=device, dtype=dtype, generator=rng)
    batch = 8 if device.type == "cuda" else 1  # a GPU product takes microseconds: fewer synchronisations

    def window(length: float) -> float:
        done, start = 0, clock(device)
        while (elapsed := clock(device) - start) < length:
            for _ in range(batch):
                a @ b
            done += batch
        return 2 * m * k * n * done / elapsed / 1e9
    window(2 * seconds)
    return round(statistics.median(window(seconds) for _ in range(windows)), 2)


class Laps:
    """Wall seconds of consecutive phases (data, load, train, eval...), for users planning sweeps."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 3)
        self._last = now


def _proc_status_kib(field: str) -> int | None:
    try:
        m = re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def release(device: torch.device) -> None:
    """Give freed memory back before a phase is measured. On CPU the figure is the process RSS and
    glibc keeps freed blocks (an earlier run of a sweep would inflate it) unless asked to trim."""
    import ctypes
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    else:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass


class PhaseMemory:
    """Peak memory of one phase (train, eval, ...), measured from `start()`."""

    def __init__(self, device: torch.device):
        self.device = device
        self.rss_reset = False

    def start(self) -> "PhaseMemory":
        release(self.device)
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.rss_reset = _reset_rss_peak()
        return self

    def read(self) -> dict:
        if self.device.type == "cuda":
            sync(self.device)
            return {"peak_allocated_gib": round(torch.cuda.max_memory_allocated(self.device) / GIB, 4),
                    "peak_reserved_gib": round(torch.cuda.max_memory_reserved(self.device) / GIB, 4)}
        hwm = _proc_status_kib("VmHWM")
        return {"peak_rss_gib": round(hwm / 1024 ** 2, 4) if hwm else None,
                "peak_rss_is_process_lifetime": not self.rss_reset}


def current_memory(device: torch.device) -> dict:
    """Memory in use now (after loading the weights, say)."""
    if device.type == "cuda":
        sync(device)
        return {"allocated_gib": round(torch.cuda.memory_allocated(device) / GIB, 4),
                "reserved_gib": round(torch.cuda.memory_reserved(device) / GIB, 4)}
    rss = _proc_status_kib("VmRSS")
    return {"rss_gib": round(rss / 1024 ** 2, 4) if rss else None}


def peak_key(device: torch.device) -> str:
    """The figure compared across runs: peak allocated on CUDA, peak RSS on CPU."""
    return "peak_allocated_gib" if device.type == "cuda" else "peak_rss_gib"


# Dense bf16 tensor-core peak (TFLOP/s, no sparsity) by GPU model, from NVIDIA's data sheets, for
# MFU. Variants of one chip differ (H100 SXM 989 vs PCIe 756), so the pattern must name the
# variant; a GPU that matches none gets no MFU rather than a wrong one.
BF16_PEAK_TFLOPS = (
    (r"H100.*(SXM|HBM3)", 989.0),  # H100 SXM5 ("NVIDIA H100 80GB HBM3")
    (r"H100.*NVL", 835.0),
    (r"H100.*PCIe", 756.0),
    (r"H200.*NVL", 835.0),
    (r"H200", 989.0),  # H200 SXM ("NVIDIA H200")
    (r"GH200", 989.0),
    (r"A100", 312.0),  # SXM4 and PCIe, 40 and 80 GB
    (r"L40S", 362.0),
    (r"\bL4\b", 121.0),
    (r"\bA10\b", 125.0),
)


def peak_tflops_for(name: str) -> float | None:
    """The dense bf16 peak of the GPU called `name` (torch.cuda.get_device_name), or None."""
    for pattern, tflops in BF16_PEAK_TFLOPS:
        if re.search(pattern, name):
            return tflops
    return None


def device_peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return peak_tflops_for(torch.cuda.get_device_name(device))
