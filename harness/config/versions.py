"""Layouts of the run config over time, so that a change of layout neither orphans old records nor
changes the id of a run that computes what it computed before.

Each layout step lists the keys it moved (old name -> new name), the keys it added, each with its
*neutral* value (the value that reproduces what runs did before the key existed), and the keys it
dropped, with the value they always had. Two uses:

- `upgrade(config, layout)`: an old record's config in the current layout (moved keys moved, added
  keys at their neutral values, dropped keys dropped), so every reader sees one layout
  (harness.record.schema);
- `id_layout(config)`: the config as the run id hashes it (harness.record.run_id): stepped back to
  the oldest layout that can express it, i.e. while every key a step added is at its neutral value.
  A run that computes what an older layout's run computed keeps that run's id (a study resumes, a
  committed record stays reusable, across the change); a run using a new setting gets a new id.
  Runs not expressible in layout 1 also hash the layout number, so no two layouts share an id.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

_UNSET = object()


def _get(cfg: dict, key: str, default=_UNSET):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _pop(cfg: dict, key: str, default=_UNSET):
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return default
    return node.pop(last, default) if isinstance(node, dict) else default


def _set(cfg: dict, key: str, value) -> None:
    *parents, last = key.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _prune(cfg: dict, key: str) -> None:
    """Drop the sections along `key` that the moves left empty."""
    parts = key.split(".")[:-1]
    while parts:
        node = _get(cfg, ".".join(parts), None)
        if node != {}:
            return
        _pop(cfg, ".".join(parts))
        parts.pop()


@dataclass(frozen=True)
class Step:
    layout: int  # the layout this step produces
    moved: dict[str, str] = field(default_factory=dict)  # old key -> new key
    # new key -> its neutral value, or a function of the (new-layout) config giving it
    added: dict[str, Any] = field(default_factory=dict)
    # the keys this layout dropped from a config, with the value they always had there: a function of
    # the config (which keys go can depend on it, e.g. on the model's source)
    removed: Callable[[dict], dict] = lambda cfg: {}
    why: str = ""

    def neutral(self, cfg: dict, key: str):
        value = self.added[key]
        return value(cfg) if callable(value) else value


# layout 1's model keys (a fact of history, not read from the current schema): every model held every
# source's keys, another source's at these defaults (the old checks refused any other value)
_LAYOUT1_MODEL_KEYS = {"name_or_path": "", "revision": None, "trust_remote_code": False, "allow_pickle_weights": False,
                       "gguf_package": None, "gguf_file": None, "gguf_path": None, "gguf_sha256": None, "tiny": {}}
_LAYOUT1_SOURCE_KEYS = {"hub": ("name_or_path", "revision", "trust_remote_code", "allow_pickle_weights"),
                        "gguf_package": ("gguf_package", "gguf_file", "gguf_path", "gguf_sha256"),
                        "tiny_random": ("tiny",)}


def _other_sources_keys(cfg: dict) -> dict:
    """The model keys layout 2 dropped from `cfg`: those of the sources it is not, at their defaults."""
    mine = _LAYOUT1_SOURCE_KEYS.get(str(_get(cfg, "model.source", "")))
    if mine is None:
        return {}
    return {f"model.{k}": v for k, v in _LAYOUT1_MODEL_KEYS.items() if k not in mine}


STEPS = (
    Step(2, why="validation got a section of its own (it had lived in train.*, sized by eval.batch_size), "
                "bottleneck adapters a placement (they had always gone on the MLP block), and each model "
                "source a schema of its own (a model had held every source's keys)",
         moved={"train.val_size": "validation.size", "train.eval_every": "validation.every",
                "train.val_accuracy_items": "validation.accuracy_items"},
         added={"validation.batch_size": lambda cfg: _get(cfg, "eval.batch_size", 16),
                "validation.keep_best": False, "method.adapter.target_modules": ["mlp"]},
         removed=_other_sources_keys),
)
LAYOUT = STEPS[-1].layout if STEPS else 1
MOVED = {old: new for step in STEPS for old, new in step.moved.items()}


def renamed(key: str) -> str | None:
    """The current name of a key that a later layout moved (a command line written for an old one)."""
    seen = key
    while seen in MOVED:
        seen = MOVED[seen]
    return seen if seen != key else None


def upgrade(config: dict, layout: int) -> dict:
    """`config` (a record's resolved config, written in `layout`) in the current layout."""
    if layout >= LAYOUT or not isinstance(config, dict):
        return config
    out = copy.deepcopy(config)
    for step in STEPS:
        if step.layout <= layout:
            continue
        for old, new in step.moved.items():
            value = _pop(out, old)
            if value is not _UNSET:
                _set(out, new, value)
                _prune(out, old)
        for key in step.added:  # where its section exists (a hand-made record may hold a fragment)
            if isinstance(_get(out, key.rsplit(".", 1)[0], None), dict) and _get(out, key) is _UNSET:
                _set(out, key, step.neutral(out, key))
        for key, value in step.removed(out).items():
            if _get(out, key) == value:
                _pop(out, key)
    return out


def id_layout(config: dict) -> dict:
    """The config as run ids hash it: in the oldest layout that expresses it (see the module doc)."""
    out = copy.deepcopy(config)
    layout = LAYOUT
    for step in reversed(STEPS):
        if any(_get(out, key) not in (_UNSET, step.neutral(out, key)) for key in step.added):
            break
        for key in step.added:
            _pop(out, key)
            _prune(out, key)
        for old, new in step.moved.items():
            value = _pop(out, new)
            if value is not _UNSET:
                _set(out, old, value)
                _prune(out, new)
        for key, value in step.removed(out).items():
            if _get(out, key) is _UNSET and isinstance(_get(out, key.rsplit(".", 1)[0], None), dict):
                _set(out, key, value)
        layout = step.layout - 1
    if layout > 1:
        out["_layout"] = layout
    return out
