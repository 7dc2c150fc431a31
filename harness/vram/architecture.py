"""A model's shape, read from its config alone: the model is built on the meta device, so no weight
is allocated (a 110B config takes well under a second) and nothing is downloaded.

Where the config comes from, in order: model.config_file (a file in harness/model_configs, or a
path), the `tiny:` section of a tiny_random model, or AutoConfig.from_pretrained(model.name_or_path)
(offline for local directories and the Hugging Face cache).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from harness.errors import ConfigError
from harness.vram import constants as C

CONFIG_DIR = Path(__file__).resolve().parents[1] / "model_configs"
# projections of a LLaMA-style decoder layer, the only layout the activation formulas describe
LAYER_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Linear:
    name: str  # qualified module name, e.g. model.layers.0.self_attn.q_proj
    in_features: int
    out_features: int
    has_bias: bool

    @property
    def short(self) -> str:
        return self.name.rsplit(".", 1)[-1]

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied_embeddings: bool
    use_cache: bool
    norm_style: str  # "llama": weight * x.to(dtype); "gemma": (1 + weight) * x in fp32
    norms_per_layer: int  # RMSNorms over the hidden size in one decoder layer
    qk_norm: bool  # per-head RMSNorm on queries and keys (Gemma 3)
    post_mlp_norm: bool  # a norm on the MLP output inside the layer (Gemma's sandwich norms)
    total_params: int  # shared (tied) tensors counted once
    linears: tuple[Linear, ...]  # every nn.Linear except the output head
    lm_head: Linear
    param_numels: tuple[tuple[str, int], ...]  # (name, numel) of every parameter tensor
    mlp_modules: int  # modules named `mlp` (where bottleneck adapters attach)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_projection(self, short: str) -> Linear:
        for lin in self.linears:
            if lin.short == short:
                return lin
        raise KeyError(short)

    @property
    def quantisable_params(self) -> int:
        return sum(lin.numel for lin in self.linears)


def _config_from_json(path: Path):
    from transformers import AutoConfig
    try:
        data = json.loads(path.read_text())
        model_type = data.pop("model_type")
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"model config {path} is not a config.json with a model_type: {exc}") from exc
    try:
        return AutoConfig.for_model(model_type, **data)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"model config {path}: transformers does not know model_type '{model_type}' ({exc})") from exc


def resolve_config_file(config_file: str) -> Path:
    """A name in harness/model_configs, or a path to a config.json."""
    for candidate in (CONFIG_DIR / config_file, Path(config_file).expanduser()):
        if candidate.is_file():
            return candidate
    known = sorted(p.name for p in CONFIG_DIR.glob("*.json"))
    raise ConfigError(f"model.config_file '{config_file}' not found in {CONFIG_DIR} or as a path; "
                      f"known: {', '.join(known)}")


def tiny_random_config(tiny: dict):
    """The same LlamaConfig harness.pipeline.models builds for source=tiny_random (byte vocabulary)."""
    from transformers import LlamaConfig

    from harness.pipeline.models import TINY_SPECIALS
    return LlamaConfig(vocab_size=256 + len(TINY_SPECIALS), tie_word_embeddings=False, **dict(tiny))


def hf_config(model_cfg: dict):
    """The transformers config for a run config's `model` section."""
    if model_cfg.get("config_file"):
        return _config_from_json(resolve_config_file(model_cfg["config_file"]))
    if model_cfg.get("source") == "tiny_random":
        return tiny_random_config(model_cfg.get("tiny") or {})
    ref = model_cfg.get("name_or_path")
    name = model_cfg.get("name", "?")
    if not ref:
        raise ConfigError(f"model '{name}' has neither model.config_file nor model.name_or_path: the VRAM "
                          f"estimate needs its config.json (add one to {CONFIG_DIR} and set model.config_file)")
    from transformers import AutoConfig
    try:  # local directories and the HF cache first: no network
        return AutoConfig.from_pretrained(ref, local_files_only=True,
                                          trust_remote_code=bool(model_cfg.get("trust_remote_code")))
    except Exception:  # noqa: BLE001 - any failure here just means "not available offline"
        pass
    try:  # then the hub (fails fast with HF_HUB_OFFLINE=1)
        return AutoConfig.from_pretrained(ref, trust_remote_code=bool(model_cfg.get("trust_remote_code")))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; all mean the same to the user
        raise ConfigError(f"cannot read the config of model '{ref}' ({type(exc).__name__}); save its config.json "
                          f"in {CONFIG_DIR} and pass model.config_file=<that file>, or set model.name_or_path "
                          f"to a local model directory") from exc


def _text_config(cfg):
    return getattr(cfg, "text_config", None) or cfg


def shape_of(cfg) -> ModelShape:
    """Build the model on the meta device and read its parameter layout."""
    return _shape_cached(json.dumps(cfg.to_dict(), sort_keys=True, default=str))


@lru_cache(maxsize=64)
def _shape_cached(cfg_json: str) -> ModelShape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = json.loads(cfg_json)
    cfg = AutoConfig.for_model(data.pop("model_type"), **data)
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(cfg)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"cannot build a causal LM from model_type '{cfg.model_type}': {exc}") from exc
    text = _text_config(cfg)
    head = model.get_output_embeddings()
    linears, lm_head = [], None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            lin = Linear(name, mod.in_features, mod.out_features, mod.bias is not None)
            if mod is head:
                lm_head = lin
            else:
                linears.append(lin)
    layer0 = {lin.short for lin in linears if ".layers.0." in f".{lin.name}."}
    missing = [p for p in LAYER_PROJECTIONS if p not in layer0]
    if lm_head is None or missing:
        raise ConfigError(f"the VRAM estimate describes LLaMA-style decoder layers ({', '.join(LAYER_PROJECTIONS)}); "
                          f"model_type '{cfg.model_type}' lacks {missing or 'an output head'}")
    layers = text.num_hidden_layers
    norm_modules = [(n, m) for n, m in model.named_modules()
                    if ".layers.0." in f".{n}" and "norm" in type(m).__name__.lower()]
    qk = [n for n, _ in norm_modules if n.rsplit(".", 1)[-1] in ("q_norm", "k_norm")]
    gemma = any(type(m).__name__.startswith("Gemma") for _, m in norm_modules)
    seen, numels = set(), []
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) not in seen:
            seen.add(id(p))
            numels.append((name, p.numel()))
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    q = next(lin for lin in linears if lin.short == "q_proj")
    k = next(lin for lin in linears if lin.short == "k_proj")
    gate = next(lin for lin in linears if lin.short == "gate_proj")
    return ModelShape(
        model_type=cfg.model_type, hidden=text.hidden_size, intermediate=gate.out_features, layers=layers,
        heads=q.out_features // head_dim, kv_heads=k.out_features // head_dim, head_dim=head_dim,
        vocab=lm_head.out_features, tied_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)),
        use_cache=C.TRAIN_USES_KV_CACHE and bool(getattr(text, "use_cache", True)), norm_style="gemma" if gemma else "llama",
        norms_per_layer=len(norm_modules) - len(qk), qk_norm=bool(qk),
        post_mlp_norm=any(n.endswith("post_feedforward_layernorm") for n, _ in norm_modules),
        total_params=sum(n for _, n in numels), linears=tuple(linears), lm_head=lm_head,
        param_numels=tuple(numels),
        mlp_modules=sum(1 for n, _ in model.named_modules() if n.rsplit(".", 1)[-1] == "mlp"))


def model_shape(model_cfg: dict) -> ModelShape:
    return shape_of(hf_config(model_cfg))
