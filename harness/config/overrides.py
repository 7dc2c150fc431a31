"""The front door: command-line overrides -> checked run configs, before anything is loaded or written.

Every entry point (python -m harness and its sweeps, harness.bench, harness.vram, the tests)
turns its key=value overrides into run configs here, and every run of the invocation must pass:
1. names: group choices (model / method / task / sweep) exist and keys exist in the typed schema
   (harness/config/__init__.py); a misspelling gets "did you mean" and the valid keys of its group; a
   '+key' may only add keys to the free-form sections (method.peft, model.tiny);
2. composition by Hydra: types (OmegaConf refuses 'abc' for an int, 'foo' for an enum);
3. harness.config.checks.check: ranges and consistency;
4. applicability: a key the chosen model or method would ignore is an error naming what reads it
   (in a sweep: a key no run of the sweep reads).
Anything wrong is one ConfigError (the CLIs print it on one line and exit 2).
"""
from __future__ import annotations

import itertools
import re
import typing
from dataclasses import fields, is_dataclass
from functools import lru_cache

from omegaconf import OmegaConf

from harness.config import (CONF_DIR, FREE_FORM, GROUPS, MODEL_KEYS_BY_SOURCE, MODEL_SCHEMAS, ModelConfig, RunConfig,
                            register_configs, rewrite_model_argument, versions)
from harness.errors import ConfigError
from harness.suggest import did_you_mean


def group_choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


class _GroupOptions:
    """What Hydra's override parser needs to expand glob(...) over a config group."""

    def get_group_options(self, group, results_filter=None, config_name=None, overrides=None):
        return group_choices(group)


def parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    try:
        return OverridesParser.create(config_loader=_GroupOptions()).parse_overrides(list(overrides))
    except HydraException as exc:
        raise ConfigError(f"cannot parse the override: {str(exc).splitlines()[0]}") from None


# ---- 1. names --------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _children(cls) -> dict:
    """Field name -> type of a schema dataclass (annotations resolved). The model section's children
    are every source's keys (which source reads which is the applicability check's to say)."""
    schemas = MODEL_SCHEMAS.values() if cls is ModelConfig else (cls,)
    out = {}
    for schema in schemas:
        hints = typing.get_type_hints(schema)
        out.update({f.name: hints[f.name] for f in fields(schema)})
    return out


def key_kind(key: str) -> str:
    """'field' (a typed key), 'section' (a typed group of keys or a free-form section) or 'free'
    (a key inside a free-form section). Raises ConfigError for a key the schema does not have."""
    if new := versions.renamed(key):
        raise ConfigError(f"'{key}' is now '{new}' (keys moved in config layout {versions.LAYOUT}); write {new}=...")
    node, parts = RunConfig, key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i]) or "the top level"
        if not is_dataclass(node):
            raise ConfigError(f"unknown key '{key}': {where} is a single value, not a group of keys")
        children = _children(node)
        if part not in children:
            prefix = ".".join(parts[:i] + [""])
            raise ConfigError(f"unknown key '{key}'{did_you_mean(part, children, prefix)}; "
                              f"the keys of {where}: {', '.join(sorted(children))} (harness/config/__init__.py)")
        node = children[part]
        if ".".join(parts[:i + 1]) in FREE_FORM:
            return "free" if i < len(parts) - 1 else "section"
    return "section" if is_dataclass(node) else "field"


def check_names(overrides: list[str]) -> list[str]:
    """The overrides with free-form keys rewritten to '++key=value' (add or replace); ConfigError
    on an unknown choice or key."""
    from hydra.core.override_parser.types import OverrideType
    out = []
    for o in parse(overrides):
        key = o.key_or_group
        if key.startswith("hydra") or o.package:  # Hydra's own settings: Hydra checks them
            out.append(o.input_line)
            continue
        if key in GROUPS:
            values = list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]
            for value in values:
                choices = group_choices(key)
                if value not in choices and not (key == "sweep" and value == "null"):
                    extra = " or a hub id / local directory (model=Qwen/Qwen2.5-0.5B)" if key == "model" else ""
                    raise ConfigError(f"unknown {key} '{value}'{did_you_mean(value, choices)}; choose {key}= one of "
                                      f"{', '.join(choices)}{extra}")
            out.append(o.input_line)
            continue
        if key == "model.source":
            raise ConfigError("model.source is the chosen model's (each source has its own schema); choose a model "
                              "of that source instead: model=hub model.name_or_path=<hub id or directory>, or "
                              f"model=<one of {', '.join(group_choices('model'))}>")
        kind = key_kind(key)
        bare = re.sub(r"^[+~]+", "", o.input_line)
        if kind == "free":
            out.append("~" + bare if o.type == OverrideType.DEL else "++" + bare)
        elif o.type == OverrideType.DEL:
            raise ConfigError(f"'{o.input_line}': typed keys cannot be removed; set {key}=<value> instead")
        elif o.type in (OverrideType.ADD, OverrideType.FORCE_ADD):
            raise ConfigError(f"'{o.input_line}': {key} exists already (the '+' prefix adds new keys); "
                              f"write {bare}")
        else:
            out.append(o.input_line)
    return out


# ---- sweeps ----------------------------------------------------------------------------------

def expand(overrides: list[str], multirun: bool) -> tuple[list[list[str]], bool]:
    """The override list of every run, and whether this is a multirun (-m, a sweep preset, or a
    preset's hydra.mode). A sweep preset's parameters come first; the command line wins."""
    parsed = parse(overrides)
    params: list[str] = []
    for o in parsed:
        if o.key_or_group == "sweep" and not o.is_sweep_override():
            preset = OmegaConf.load(CONF_DIR / "sweep" / f"{o.get_value_element_as_str()}.yaml")
            hydra = preset.get("hydra") or {}
            multirun = multirun or hydra.get("mode") == "MULTIRUN"
            params += [f"{k}={v}" for k, v in (hydra.get("sweeper", {}).get("params") or {}).items()]
    sweeping = [o.input_line for o in parsed if o.is_sweep_override()]
    if sweeping and not multirun:
        raise ConfigError(f"{sweeping[0]} gives several values: add -m (a sweep), or give one value")
    if not multirun:
        return [list(overrides)], False
    return runs_of(parse(params + list(overrides))), True


def runs_of(parsed) -> list[list[str]]:
    """Every combination of a sweep's values, in the order Hydra's basic sweeper launches them: the
    cartesian product over the keys in order of first mention, a later override of a key replacing
    the earlier one (a sweep preset's parameters come first, so the command line wins)."""
    axes: dict[str, list[str]] = {}
    for o in parsed:
        key = o.get_key_element()
        if not o.is_sweep_override():
            axes[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in o.sweep_string_iterator()]
        else:
            raise ConfigError(f"{o.input_line}: an interval is not a list of runs; give the values (a,b,c) or range(a,b)")
    return [list(run) for run in itertools.product(*axes.values())]


# ---- 2. composition --------------------------------------------------------------------------

def compose_raw(overrides: list[str]):
    """Hydra's composition of one run (no run directory); Hydra's and OmegaConf's errors become
    one-line ConfigErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[o for o in overrides if not o.lstrip("+~").startswith("hydra")])
            OmegaConf.resolve(cfg)  # interpolations resolved once: every reader sees the same values
            return cfg
    except (HydraException, OmegaConfBaseException) as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if not ln.startswith(("full_key", "object_type", "reference_type"))),
                      type(exc).__name__)
        full_key = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("full_key:")), "")
        other_source = _another_sources_key(full_key, str(cause))
        if other_source:
            raise ConfigError(other_source) from None
        raise ConfigError(f"bad value{f' for {full_key}' if full_key else ''}: {detail}") from None


def _another_sources_key(full_key: str, error: str) -> str | None:
    """The schema of the chosen model's source refused a key another source reads: say whose it is."""
    schema = re.search(r"object_type=(\w+)", error)
    parts = full_key.split(".")
    if not (schema and len(parts) == 2 and parts[0] == "model"):
        return None
    mine = next((src for src, cls in MODEL_SCHEMAS.items() if cls.__name__ == schema.group(1)), None)
    theirs = [src for src, keys in MODEL_KEYS_BY_SOURCE.items() if parts[1] in keys]
    if mine is None or not theirs:
        return None
    users = ", ".join(_models_by_source().get(str(theirs[0]), []))
    return (f"{full_key} is read by models of source {theirs[0]} ({users}); the chosen model is source {mine}, "
            f"which reads {', '.join(f'model.{k}' for k in MODEL_KEYS_BY_SOURCE[mine])}")


# ---- 4. applicability ------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _models_by_source() -> dict:
    out: dict = {}
    for name in group_choices("model"):
        source = OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml").get("source", "hub")
        out.setdefault(str(source), []).append(name)
    return out


def not_applicable(cfg, key: str) -> str | None:
    """Why `key` would be ignored by the run `cfg` (None when the run reads it)."""
    from harness import methods
    parts = key.split(".")
    spec = methods.get(cfg.method.name)
    if parts[0] == "method" and len(parts) > 1:
        if not spec.trains and parts[1] != "name":
            return f"{key}: method={spec.name} does not train"
        if parts[1] not in ("name", "lr") and parts[1] not in spec.sections:
            readers = [n for n, s in methods.all_methods().items() if parts[1] in s.sections]
            return (f"method.{parts[1]} is read by {', '.join(readers) or 'no method'}; method={spec.name} reads "
                    f"{', '.join(f'method.{s}' for s in ('lr',) + spec.sections)}")
        if parts[1] == "peft" and len(parts) > 2 and parts[2] not in methods.peft_arguments(spec.peft_config):
            readers = [n for n, s in methods.all_methods().items()
                       if s.peft_config and parts[2] in methods.peft_arguments(s.peft_config)]
            return (f"{key} is an argument of {', '.join(readers)}'s peft config, not of {spec.peft_config} "
                    f"(method={spec.name})")
    if parts[0] == "train" and not spec.trains:
        return f"{key}: method={spec.name} does not train"
    return None


def check_applicable(cfgs: list, overrides: list[str]) -> None:
    keys = [o.key_or_group for o in parse(overrides)
            if o.key_or_group not in GROUPS and not o.key_or_group.startswith("hydra") and not o.package]
    for key in dict.fromkeys(keys):
        reasons = [not_applicable(cfg, key) for cfg in cfgs]
        if all(reasons):
            raise ConfigError(f"{key} does not apply here: {reasons[0]}")


# ---- the whole door --------------------------------------------------------------------------

def resolve(overrides: list[str], multirun: bool = False, here: bool = True) -> tuple[list, list[str], bool]:
    """(the checked config of every run, the overrides to hand to Hydra, multirun?). `here=False`:
    the runs are meant for another machine (see harness.config.checks.check)."""
    known = set(group_choices("model"))
    checked = check_names(rewrite_model_argument(list(overrides), known))
    jobs, multirun = expand(checked, multirun)
    cfgs = [compose_raw(job) for job in jobs]
    from harness.config import checks  # torch, datasets: after the checks that need neither (a typo fails fast)
    for cfg in cfgs:
        checks.check(cfg, here)
    check_applicable(cfgs, checked)
    return cfgs, checked, multirun


def resolve_one(overrides: list[str] | tuple = (), here: bool = True):
    """The checked config of a single run."""
    cfgs, _, multirun = resolve(list(overrides), here=here)
    if multirun:
        raise ConfigError(f"{' '.join(overrides)} describes a sweep; give one value per key")
    return cfgs[0]
