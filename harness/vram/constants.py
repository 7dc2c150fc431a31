"""Every number the VRAM estimate uses that is not read from a model config or a run config.

Calibration against measured runs may change these (and only these): there are no per-run or
per-model fudge factors anywhere else. Each constant says what it stands for and where it comes from.
"""
from __future__ import annotations

GIB = 1024 ** 3

# --- weights --------------------------------------------------------------------------------------
# bitsandbytes NF4/FP4: two 4-bit values per byte; one absmax per block of 64 weights
NF4_BYTES_PER_PARAM = 0.5
NF4_BLOCKSIZE = 64
NF4_ABSMAX_BYTES = 4  # fp32 absmax per block without double quantisation
# double quantisation: the absmax values themselves are quantised to 8 bit in blocks of 256,
# with one fp32 second-level absmax per block, a 256-entry fp32 code table and an fp32 offset per layer
NF4_DQ_ABSMAX_BYTES = 1
NF4_DQ_BLOCKSIZE = 256
NF4_DQ_SECOND_ABSMAX_BYTES = 4
NF4_DQ_PER_LAYER_BYTES = 256 * 4 + 4
# LLM.int8: one byte per weight plus one fp32 scale (SCB) per output row
INT8_BYTES_PER_PARAM = 1
INT8_ROW_SCALE_BYTES = 4

# --- optimizer ------------------------------------------------------------------------------------
ADAM_STATES = 2  # exp_avg and exp_avg_sq; torch AdamW keeps them in the parameter's dtype
# bitsandbytes 8-bit Adam: uint8 states with one fp32 absmax per block of 256; tensors smaller
# than 4096 elements keep fp32 states (bnb's min_8bit_size)
BNB_OPTIM_BLOCKSIZE = 256
BNB_OPTIM_MIN_8BIT_SIZE = 4096

# --- activations ----------------------------------------------------------------------------------
# bytes per element of the saved dropout mask: CUDA's fused dropout keeps a bool mask; the CPU
# implementation keeps the scaled noise tensor in the input's dtype (fp32 for LoRA inputs)
DROPOUT_MASK_BYTES_CUDA = 1
# logits/loss without a fused loss, in bytes per (token x vocab) element beyond the logits themselves:
# ForCausalLMLoss upcasts logits to fp32 (a copy unless they already are fp32); cross_entropy keeps
# the fp32 log-softmax for backward; backward adds the fp32 gradient of the log-softmax output and
# of its input before casting back
LOSS_FP32_BYTES = 4
# liger-kernel fused linear cross-entropy: logits are computed in chunks of about
# tokens / ceil(vocab / hidden) rows (rounded up to a power of two: up to 2x) and the input
# gradient (tokens x hidden) is computed during the forward. Bytes per token per hidden unit for
# the chunk (bf16 logits + fp32 upcast, with the power-of-two slack)
LIGER_CHUNK_BYTES_PER_TOKEN_PER_HIDDEN = 8
# whether the previous micro-batch's output (logits, KV cache) is still referenced during the next forward
PREVIOUS_OUTPUT_HELD = False  # train.py deletes the output before backward
# the training loop passes use_cache=False, so no KV cache is built during training
TRAIN_USES_KV_CACHE = False
# working set of one decoder layer's backward (gradients of its activations), as a multiple of
# that layer's saved activations
BACKWARD_WORKSPACE_LAYERS = 1.0
# flash / memory-efficient attention pads the log-sum-exp and the attention bias to these multiples
ATTN_LSE_PAD = 32
ATTN_BIAS_PAD = 16

# --- framework ------------------------------------------------------------------------------------
# counted by torch.cuda.max_memory_allocated: cuBLAS/cuBLASLt workspaces, RNG state, rotary
# tables, input ids/labels and other small buffers
TORCH_ALLOCATED_OVERHEAD_GIB = 0.06
# not counted by max_memory_allocated but visible in nvidia-smi: the CUDA context with its kernel
# images (about 0.3-1 GiB depending on GPU, driver and lazy loading) and the caching allocator's
# reserved-but-unallocated memory (fragmentation), as a fraction of the allocated peak
CUDA_CONTEXT_GIB = 0.6
ALLOCATOR_FRAGMENTATION = 0.10

# --- validation -----------------------------------------------------------------------------------
VALIDATION_TOLERANCE = 0.10  # --validate --strict fails when |estimate/measured - 1| exceeds this
