"""VRAM requirement estimation: will (model, method, batch, sequence length) fit on a GPU?

    python -m harness.vram model=llama-7b method=qlora4 train.micro_batch_size=4 train.cutoff_len=512
    python -m harness.vram --table       # full / LoRA / QLoRA-8 / QLoRA-4 for 7B..110B vs a reference table
    python -m harness.vram --validate    # estimate vs every measured CUDA record in results/runs

Offline: parameter counts come from config.json files in harness/model_configs built on the meta
device. Modules: constants (every tunable number), architecture (model shape), setup (dtypes a
run config implies), params / activations (pure arithmetic), estimate (peak moments), cli.
"""
from harness.vram.estimate import COMPONENTS, Estimate, as_dict, estimate, predict_peak_gib

__all__ = ["COMPONENTS", "Estimate", "as_dict", "estimate", "predict_peak_gib"]
