"""Task families: declared test sets, training sets and scoring; the evaluator is generic.

A family module (arithmetic.py, commonsense.py) declares a FAMILY; adding a family is one module
plus one YAML in conf/task/. Scoring rules live in harness.tasks.extract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness import data
from harness.errors import ConfigError, DataError
from harness.tasks.extract import (answer_options, extract_label, extract_letter, extract_number,
                             number_correct)
from harness.registry import import_package_modules


@dataclass(frozen=True)
class TestSet:
    name: str
    display: str  # as in the paper's tables
    kind: str  # number | letter | label
    labels: tuple = ()  # label words, for kind == label
    remote_exact: str | None = None  # REMOTE_FILES key of the exact file when ours is approximate

    @property
    def multiple_choice(self) -> bool:
        return self.kind in ("label", "letter")


@dataclass(frozen=True)
class TrainSet:
    name: str
    shipped: tuple = ()  # manifest names ('train/gsm8k_train', ...)
    remote: str | None = None  # data.REMOTE_FILES key
    contaminates: tuple = ()  # test sets whose items overlap this training data
    note: str = ""
    local: str | None = None  # a user's own file in the LLM-Adapters format
    # test sets (of any family) whose own training split is part of this training data: never a
    # retention set of a run trained on it (harness.config.checks.check_retention_suite)
    train_splits: tuple = ()
    # a remote file's size as its name states it (math_10k: 10,000), for planning before it is fetched
    nominal_records: int | None = None


@dataclass(frozen=True)
class HeldOutText:
    """Documents of a family's domain that no test set holds, scored by cross-entropy as another
    family's out-of-domain retention measure (harness.pipeline.forgetting): each a prompt and the reference
    continuation whose per-token loss is measured before and after fine-tuning."""
    name: str
    display: str
    shipped: str  # the manifest file ('train/gsm8k_train')
    train_split_of: str  # the test set whose training split the documents are
    context: str  # the prompt, formatted with the record's fields ('Question: {instruction}\nAnswer:')
    continuation: str  # the scored text, formatted likewise (' {output}')
    note: str = ""


@dataclass(frozen=True)
class TaskFamily:
    name: str
    test_sets: dict
    train_sets: dict
    paper_average: tuple  # the sets the paper averages
    max_new_tokens: int  # generation length: room for the family's answers and rationales
    paper_train_set: str  # the LLM-Adapters paper's training set (the paper preset trains on it)
    # the family's forgetting suite (forgetting.test_sets=[]): out of its domain, test sets of another
    # family (cloze-scored) or held-out texts of another family (cross-entropy)
    retention: tuple = ()
    texts: dict = field(default_factory=dict)  # HeldOutText of this family's domain, by name

    def test_set(self, name: str) -> TestSet:
        if name not in self.test_sets:
            raise ConfigError(f"unknown test set '{name}' for task '{self.name}'; known: {list(self.test_sets)}")
        return self.test_sets[name]

    def train_set(self, name: str) -> TrainSet:
        if name.endswith((".json", ".json.gz")) or "/" in name:  # a user's file
            return TrainSet(name=name, local=name, note="user-provided file")
        if name not in self.train_sets:
            raise ConfigError(f"unknown training set '{name}' for task '{self.name}'; "
                              f"choose task.train_set from {list(self.train_sets)} or a .json file path")
        return self.train_sets[name]


FAMILIES: dict[str, TaskFamily] = {}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def averages(family: TaskFamily | None, acc: dict, overlap=()) -> dict:
    """The one definition of every average a record, table, sweep line or regression shows.

    avg_paper: the paper's average (arithmetic: GSM8K, AQuA, MAWPS, SVAMP; commonsense: all 8);
    avg_all: every test set of the family; avg_excluding_overlap: every set that does not overlap
    the training data. Each is None unless every set it needs was evaluated, so a run on a subset of
    the sets never shows an average that reads like the full one. avg_evaluated: the mean of the
    sets this run evaluated, whatever they are (progress lines; never compared across runs).
    """
    out = {"avg_paper": None, "avg_all": None, "avg_excluding_overlap": None,
           "avg_evaluated": _mean(list(acc.values()))}
    if family is None:
        return out
    if all(s in acc for s in family.paper_average):
        out["avg_paper"] = _mean([acc[s] for s in family.paper_average])
    if all(s in acc for s in family.test_sets):
        out["avg_all"] = _mean([acc[s] for s in family.test_sets])
        out["avg_excluding_overlap"] = _mean([acc[s] for s in family.test_sets if s not in set(overlap)])
    return out


def register(family: TaskFamily) -> TaskFamily:
    FAMILIES[family.name] = family
    return family


def _load_all() -> None:
    import_package_modules(__name__)


def get_family(name: str) -> TaskFamily:
    _load_all()
    if name not in FAMILIES:
        raise ConfigError(f"unknown task '{name}'; choose task= one of {sorted(FAMILIES)}")
    return FAMILIES[name]


def all_test_sets() -> dict[str, TestSet]:
    _load_all()
    return {k: v for fam in FAMILIES.values() for k, v in fam.test_sets.items()}


def all_texts() -> dict[str, HeldOutText]:
    _load_all()
    return {k: v for fam in FAMILIES.values() for k, v in fam.texts.items()}


def home_family(name: str) -> TaskFamily:
    """The family a test set or held-out text belongs to (its domain)."""
    _load_all()
    for fam in FAMILIES.values():
        if name in fam.test_sets or name in fam.texts:
            return fam
    raise ConfigError(f"unknown test set or held-out text '{name}'")


# ---- scoring ---------------------------------------------------------------------------------

# The one answer scorer: the test sets (by their kind) and the validation split (by its answer's
# kind, harness.pipeline.heldout) both extract and compare through these two functions.

def extract_as(kind: str, response: str, labels=()):
    """The prediction extracted from a response as LLM-Adapters extracts answers of this kind
    (number, letter, or one of `labels`); None when nothing parses."""
    if kind == "number":
        return extract_number(response)
    if kind == "letter":
        return extract_letter(response)
    return extract_label(response, list(labels))


def correct_as(kind: str, pred, gold: str) -> bool:
    if kind == "number":
        return number_correct(pred, gold)
    return pred is not None and pred == gold


def extract(ts: TestSet, response: str):
    return extract_as(ts.kind, response, ts.labels)


def is_correct(ts: TestSet, pred, gold: str) -> bool:
    return correct_as(ts.kind, pred, gold)


def options(ts: TestSet, instruction: str) -> list[str]:
    """Answer options of one item, for log-likelihood scoring."""
    if ts.kind == "letter":
        return ["A", "B", "C", "D", "E"]
    if ts.kind == "label":
        return answer_options(instruction, list(ts.labels))
    raise ConfigError(f"{ts.name} is not multiple choice: eval.scoring=label or cloze needs a multiple-choice set")


_UNREACHABLE: set = set()


# ---- loading ---------------------------------------------------------------------------------

def load_test_set(ts: TestSet, cache_dir: str, variant: str = "auto") -> tuple[list[dict], dict]:
    """Records and provenance of a test set. For an approximate shipped set (HellaSwag), `variant`
    auto uses the exact file when it can be fetched, exact requires it, approx uses the shipped one."""
    if variant not in ("auto", "exact", "approx"):
        raise ConfigError(f"eval.hellaswag must be auto, exact or approx, not '{variant}'")
    if ts.remote_exact and (variant == "exact" or (variant == "auto" and ts.remote_exact not in _UNREACHABLE)):
        try:
            # auto has a fallback: one try, no retries (offline they would only add pauses)
            records, meta = data.remote(ts.remote_exact, cache_dir, timeout=5.0,
                                        retries=0 if variant == "auto" else data.DOWNLOAD_RETRIES)
            return records, {**meta, "approximate": False, "variant": "exact"}
        except DataError:
            if variant == "exact":
                raise
            _UNREACHABLE.add(ts.remote_exact)  # offline: do not try again in this process
    records, meta = data.shipped(f"test/{ts.name}")
    return records, {**meta, "variant": "approx" if meta.get("approximate") else "exact"}


def load_train_set(tr: TrainSet, cache_dir: str) -> tuple[list[dict], list[dict]]:
    """Records of a training set (components concatenated in order) and each component's provenance."""
    records, provenance = [], []
    if tr.local:
        path = Path(tr.local).expanduser()
        recs, digest = data.read_local(path)
        records += recs
        provenance.append({"name": str(path), "path": str(path.resolve()), "records": len(recs), "sha256": digest,
                           "source": "user-provided file", "approximate": False})
    if tr.remote:
        recs, meta = data.remote(tr.remote, cache_dir)
        records += recs
        provenance.append({"name": tr.remote, **meta})
    for name in tr.shipped:
        recs, meta = data.shipped(name)
        records += recs
        provenance.append({"name": name, **meta})
    return records, provenance


def train_set_size(tr: TrainSet, cache_dir: str) -> tuple[int | None, str]:
    """How many records the training set holds and how that is known, without fetching anything
    (harness.plan): the manifest's count for shipped files, the file's for a user's or an already
    fetched remote one, the size a remote file's name states before it is fetched."""
    total = sum(data.manifest()["files"][name]["records"] for name in tr.shipped)
    basis = "counted"
    if tr.local:
        total += len(data.read_local(Path(tr.local).expanduser())[0])
    if tr.remote:
        cached = data.cached_remote(tr.remote, cache_dir)
        if cached is not None:
            total += len(data.read_json_records(cached, required=data.TRAIN_FIELDS)[0])
        elif tr.nominal_records is None:
            return None, "not fetched yet"
        else:
            total += tr.nominal_records
            basis = "nominal: the size its name states (counted once fetched)"
    return total, basis


def select(records: list[dict], limit: int) -> list[dict]:
    """The first `limit` items (all when limit <= 0): the same items for every run."""
    return records if limit <= 0 else records[:limit]


def retention_records(s, limit: int) -> list[dict]:
    """The first `limit` records a retention set is scored on (the shipped files: the suite must not
    change with network access; HellaSwag is the approximate rebuild)."""
    if isinstance(s, HeldOutText):
        records, _ = data.shipped(s.shipped)
    else:
        records, _ = load_test_set(s, "", "approx")
    return select(records, limit)
