"""The run record as types: what one JSON file under results/runs/ holds, section by section.

Every reader (the runner's skip check, the study, the report, the regression gate, W&B, the VRAM
validation) gets a `Record`, never a raw dict, so a field has one name and one type everywhere and a
missing section is an empty one, not a chain of `.get(...) or {}`. Pydantic parses and checks the
file (`Record.read`); sections keep fields they do not name (`extra="allow"`), so a newer writer's
record still loads, and `to_json()` writes back exactly what was read.

Schema versions follow the run config's layout (harness.config.versions): 2 moved the validation
keys out of train.* into a section of their own. An older record is read in the current layout (its
config upgraded, `schema` raised), so no reader knows old layouts. Files written before the field
existed (the committed baselines of 2026-11) are read as version 1: every section they lack is
optional here.
"""
from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from harness.config import versions

SCHEMA_VERSION = versions.LAYOUT
# statuses that are an answer: a rerun skips them unless force=true ('failed' is retried)
TERMINAL = ("ok", "diverged", "oom", "predicted_oom")
STATUSES = TERMINAL + ("failed",)
Status = Literal["ok", "diverged", "oom", "predicted_oom", "failed", "running"]


class Section(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())


class RunInfo(Section):
    model: Optional[str] = None
    method: Optional[str] = None
    task: Optional[str] = None
    seed: Optional[int] = None
    train_set: Optional[str] = None
    started: Optional[str] = None
    finished: Optional[str] = None
    wall_seconds: Optional[float] = None
    log: Optional[str] = None
    config: dict = Field(default_factory=dict)  # the resolved run config (secrets redacted)

    @model_validator(mode="after")
    def _names_from_config(self):
        """Hand-made records (a test's, an old baseline's) may name the run only in its config."""
        cfg = self.config
        for field, section, key in (("model", "model", "name"), ("method", "method", "name"),
                                    ("task", "task", "name"), ("train_set", "task", "train_set")):
            if getattr(self, field) is None and isinstance(cfg.get(section), dict):
                setattr(self, field, cfg[section].get(key))
        if self.seed is None and isinstance(cfg.get("seed"), int):
            self.seed = cfg["seed"]
        return self

    def setting(self, dotted: str, default: Any = None) -> Any:
        """A value of the run's config by its key (`setting("method.lr")`), `default` when absent."""
        node: Any = self.config
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    @property
    def stage(self) -> str:
        """run | tune | final; records made before `stage` was a key carried it in tags.stage."""
        return self.setting("stage") or self.setting("tags.stage") or "run"


class CodeIdentity(Section):
    code_id: Optional[str] = None
    source_sha256: Optional[str] = None
    git_sha: Optional[str] = None
    git_dirty: Optional[bool] = None


class MetaInfo(Section):
    versions: dict = Field(default_factory=dict)
    git_sha: Optional[str] = None
    git_dirty: Optional[bool] = None
    code: CodeIdentity = Field(default_factory=CodeIdentity)
    device_type: Optional[str] = None
    device_name: Optional[str] = None
    device_memory_gib: Optional[float] = None
    cpu_model: Optional[str] = None
    cpu: Optional[str] = None  # the architecture: what records before cpu_model name the CPU by
    cpu_count: Optional[int] = None
    world_size: Optional[int] = None


class PhaseMemory(Section):
    """One phase's memory: GPU peaks (CUDA) or process RSS (CPU)."""
    peak_allocated_gib: Optional[float] = None
    peak_reserved_gib: Optional[float] = None
    allocated_gib: Optional[float] = None
    reserved_gib: Optional[float] = None
    rss_gib: Optional[float] = None
    peak_rss_gib: Optional[float] = None


class Throughput(Section):
    wall_seconds: Optional[float] = None
    tokens_per_second: Optional[float] = None
    tokens_per_second_after_first: Optional[float] = None
    samples_per_second: Optional[float] = None
    median_step_seconds: Optional[float] = None
    mfu: Optional[float] = None
    real_tokens: Optional[int] = None
    padded_tokens: Optional[int] = None
    samples: Optional[int] = None
    host_gflops: Optional[float] = None  # the host's matrix-product speed around training (measure.host_gflops)


class LabelAccuracy(Section):
    accuracy: Optional[float] = None
    n: Optional[int] = None


class TrainInfo(Section):
    engine: Optional[str] = None
    # validation.keep_best: the step whose weights the run ended with, its loss, the last step
    validation_best: Optional[dict] = None
    steps: Optional[int] = None
    lr: Optional[float] = None
    losses: list[float] = Field(default_factory=list)
    validation_loss: list[dict] = Field(default_factory=list)
    validation_accuracy: Optional[LabelAccuracy] = None
    throughput: Throughput = Field(default_factory=Throughput)
    fused_loss: Optional[str] = None
    loss_last: Optional[float] = None


class HeldOutLoss(Section):
    """The last held-out loss pass, per example (the study's selection noise)."""
    items: int = 0
    loss: Optional[float] = None
    loss_se: Optional[float] = None
    example_loss: list[float] = Field(default_factory=list)
    example_tokens: list[int] = Field(default_factory=list)


class DataInfo(Section):
    train_set: Optional[str] = None
    train: list[dict] = Field(default_factory=list)
    train_examples: Optional[int] = None
    validation: dict = Field(default_factory=dict)
    test: dict[str, dict] = Field(default_factory=dict)

    @property
    def validation_items(self) -> Optional[int]:
        return self.validation.get("items")


class SetMetrics(Section):
    """One test set's score under one scoring."""
    accuracy: float
    n: int
    correct: Optional[int] = None
    accuracy_norm: Optional[float] = None
    parse_failures: Optional[int] = None
    parse_failure_rate: Optional[float] = None
    scoring: Optional[str] = None
    precision: Optional[str] = None
    approximate: bool = False
    overlaps_training_data: bool = False


class EvalInfo(Section):
    questions: Optional[int] = None
    seconds: Optional[float] = None
    questions_per_second: Optional[float] = None


class Scored(Section):
    """Another scoring of the same trained model (eval.also)."""
    eval: dict[str, SetMetrics] = Field(default_factory=dict)
    eval_info: EvalInfo = Field(default_factory=EvalInfo)


class Summary(Section):
    avg_evaluated: Optional[float] = None
    avg_paper: Optional[float] = None
    avg_all: Optional[float] = None
    avg_excluding_overlap: Optional[float] = None
    overlapping_sets: list[str] = Field(default_factory=list)
    approximate_sets: list[str] = Field(default_factory=list)


class Forgetting(Section):
    sets: dict[str, dict] = Field(default_factory=dict)
    forgetting_avg: Optional[float] = None
    forgetting_avg_ci95: list[Optional[float]] = Field(default_factory=list)
    measure: Optional[str] = None
    items_per_set: Optional[int] = None


class Params(Section):
    trainable: int
    total: int
    trainable_pct: Optional[float] = None


class Record(Section):
    schema_: int = Field(SCHEMA_VERSION, alias="schema")
    run_id: str = ""
    status: Status
    error: Optional[str] = None
    warnings: list[str] = Field(default_factory=list)
    run_info: RunInfo = Field(default_factory=RunInfo)
    meta_info: MetaInfo = Field(default_factory=MetaInfo)
    data: DataInfo = Field(default_factory=DataInfo)
    model_info: dict = Field(default_factory=dict)
    method_info: dict = Field(default_factory=dict)
    params: Optional[Params] = None
    memory: dict[str, PhaseMemory] = Field(default_factory=dict)
    phase_seconds: dict[str, float] = Field(default_factory=dict)
    train_info: Optional[TrainInfo] = None
    validation_final: Optional[HeldOutLoss] = None
    eval: dict[str, SetMetrics] = Field(default_factory=dict)
    eval_info: EvalInfo = Field(default_factory=EvalInfo)
    eval_also: dict[str, Scored] = Field(default_factory=dict)
    summary: Optional[Summary] = None
    forgetting: Optional[Forgetting] = None
    vram_estimate: Optional[dict] = None
    traceback: Optional[str] = None
    diverged_at_step: Optional[int] = None
    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True)

    @classmethod
    def parse(cls, obj: Any) -> "Record":
        """The record `obj` (a dict read from JSON); ValueError saying why it is not one."""
        if not isinstance(obj, dict):
            raise ValueError(f"not a JSON object (a {type(obj).__name__})")
        if "status" not in obj:
            raise ValueError("no 'status' field")
        if obj["status"] not in STATUSES:
            raise ValueError(f"unknown status {obj['status']!r} (expected one of {', '.join(STATUSES)})")
        if obj["status"] == "ok" and not isinstance(obj.get("run_info"), dict):
            raise ValueError("status ok but no 'run_info'")
        layout = obj.get("schema", 1)
        if isinstance(layout, int) and layout < SCHEMA_VERSION and isinstance(obj.get("run_info"), dict):
            obj = {**obj, "schema": SCHEMA_VERSION, "run_info": {
                **obj["run_info"], "config": versions.upgrade(obj["run_info"].get("config", {}), layout)}}
        try:
            return cls.model_validate(obj)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{where}: {first['msg']}") from None

    def to_json(self) -> dict:
        """The record as written to its file (sections never filled are left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)

    # ---- what readers ask of a record ----
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def code_id(self) -> Optional[str]:
        return self.meta_info.code.code_id

    @property
    def finished(self) -> str:
        return self.run_info.finished or ""

    def phase_memory(self, phase: str) -> PhaseMemory:
        return self.memory.get(phase) or PhaseMemory()

    @property
    def throughput(self) -> Throughput:
        return self.train_info.throughput if self.train_info else Throughput()

    def scorings(self) -> dict[str, dict[str, SetMetrics]]:
        """Each scoring's per-set metrics: the primary evaluation (its scoring named by the config)
        and every eval.also scoring."""
        out = {str(self.run_info.setting("eval.scoring", "generate")): self.eval} if self.eval else {}
        out.update({name: extra.eval for name, extra in self.eval_also.items()})
        return out
