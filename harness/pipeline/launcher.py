"""How many GPUs a run needs, for the VRAM-sized submitit launchers (hydra_plugins/peft_bench):
ceil(predicted total memory / cluster.gpu_memory_gib)."""
from __future__ import annotations

import logging
import math
from harness.errors import HarnessError

log = logging.getLogger(__name__)
MAX_GPUS_PER_NODE = 8


def gpus_needed(resolved: dict, gpu_memory_gib: float) -> int:
    """GPUs one run needs: its predicted total memory over one GPU's, at least 1."""
    from harness.vram import predict_peak_gib
    try:
        total = predict_peak_gib(resolved)["predicted_total_gib"]
    except HarnessError as exc:
        log.warning("no VRAM estimate for %s (%s): asking for 1 GPU", resolved["model"]["name"], exc)
        return 1
    return max(1, math.ceil(total / gpu_memory_gib))
