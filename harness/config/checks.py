"""Every check a composed run config must pass, in one place, before anything is loaded or written.

`check(cfg)` is called by every entry point (python -m harness for each run of a sweep,
harness.bench, harness.vram) through harness.config.overrides. Closed choices (scoring, precision, model
source, ...) are enums in harness/config/__init__.py, so OmegaConf has refused bad ones already; what is
left here are ranges, cross-key consistency, and what the chosen method, task and model accept.
Each failure is one ConfigError whose message names the key and the fix.
"""
from __future__ import annotations

import re
import types
import typing
from pathlib import Path

from omegaconf import OmegaConf

from harness import data, methods, tasks
from harness.config import MODEL_SCHEMAS
from harness.errors import ConfigError
from harness.pipeline import models
from harness.tasks import cloze_prompts
from harness.suggest import did_you_mean


def _at_least(cfg, key: str, minimum, why: str = "") -> None:
    value = _get(cfg, key)
    if value < minimum:
        raise ConfigError(f"{key}={value} must be >= {minimum}{why}")


def _get(cfg, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def check(cfg, here: bool = True) -> None:
    """Raise ConfigError on the first problem; return None when the config can run. `here=False`
    checks a config meant for another machine (the VRAM estimator sizing a GPU from a laptop):
    whether its device exists and its model files are installed here is then not asked."""
    schema = MODEL_SCHEMAS[cfg.model.source]
    if OmegaConf.get_type(cfg.model) is not schema:  # a model YAML naming one source and using another's schema
        raise ConfigError(f"model={cfg.model.name} says source {cfg.model.source} but uses the schema "
                          f"{OmegaConf.get_type(cfg.model).__name__}; its YAML's defaults must name "
                          f"/schema/model_{cfg.model.source}@_here_")
    spec = methods.get(cfg.method.name)
    check_method(cfg.method, spec)
    if spec.trains:
        check_training(cfg.train, cfg.method.lr)
        check_validation(cfg.validation)
        if cfg.train.packing and spec.family == "prompt":
            raise ConfigError(f"train.packing=true cannot train method={spec.name}: its virtual tokens come once, "
                              f"before the row, so packed examples after the first would not see them")
    check_task(cfg)
    check_evaluation(cfg)
    for key in ("resume.every_steps", "resume.every_minutes", "seed"):
        _at_least(cfg, key, 0)
    if cfg.cluster.gpu_memory_gib <= 0:
        raise ConfigError(f"cluster.gpu_memory_gib={cfg.cluster.gpu_memory_gib} must be positive")
    check_device(cfg.device, cfg.train, here)
    if here:
        models.check(cfg.model)


def check_training(t, lr: float) -> None:
    if not lr > 0:
        raise ConfigError(f"method.lr={lr} must be positive (the recipe's is in conf/method/<name>.yaml)")
    if t.batch_size <= 0 or t.micro_batch_size <= 0:
        raise ConfigError(f"train.batch_size ({t.batch_size}) and train.micro_batch_size ({t.micro_batch_size}) "
                          f"must be positive integers")
    if t.batch_size % t.micro_batch_size:
        raise ConfigError(f"train.batch_size ({t.batch_size}) must be a multiple of train.micro_batch_size "
                          f"({t.micro_batch_size})")
    if t.max_steps < 0:
        raise ConfigError(f"train.max_steps={t.max_steps} must be >= 0 (0: train.epochs decides the length)")
    if t.epochs < 0 or (t.max_steps == 0 and t.epochs == 0):
        raise ConfigError(f"nothing to train: train.epochs={t.epochs}, train.max_steps={t.max_steps}; set "
                          f"train.epochs > 0 or train.max_steps > 0")
    if t.cutoff_len < 8:
        raise ConfigError(f"train.cutoff_len={t.cutoff_len} is too small; the paper uses 256")
    for key in ("limit", "warmup_steps"):
        if t[key] < 0:
            raise ConfigError(f"train.{key}={t[key]} must be >= 0")
    if t.weight_decay < 0 or t.max_grad_norm < 0:
        raise ConfigError(f"train.weight_decay ({t.weight_decay}) and train.max_grad_norm ({t.max_grad_norm}) "
                          f"must be >= 0 (max_grad_norm 0 turns clipping off)")
    if t.log_every < 1:
        raise ConfigError(f"train.log_every={t.log_every} must be >= 1")


def check_validation(v) -> None:
    for key in ("size", "every", "accuracy_items"):
        if v[key] < 0:
            raise ConfigError(f"validation.{key}={v[key]} must be >= 0")
    if v.batch_size < 1:
        raise ConfigError(f"validation.batch_size={v.batch_size} must be >= 1")
    if v.accuracy_items > v.size:
        raise ConfigError(f"validation.accuracy_items={v.accuracy_items} is more than the validation.size="
                          f"{v.size} records held out")
    if v.keep_best and not (v.size and v.every):
        raise ConfigError(f"validation.keep_best=true picks the weights of the lowest validation loss, which needs "
                          f"a validation split and checkpoints to choose from: set validation.size > 0 and "
                          f"validation.every > 0 (LLM-Adapters: size 120, every 80 steps); now size={v.size}, "
                          f"every={v.every}")


def check_method(m, spec: methods.Method) -> None:
    bits = m.quantization.bits
    if bits and spec.quantization == "none":
        able = [n for n, s in methods.all_methods().items() if s.quantization != "none"]
        raise ConfigError(f"method={spec.name} does not run on a quantised base (method.quantization.bits={bits}); "
                          f"quantised bases are for {', '.join(able)}")
    if spec.quantization == "required" and not bits:
        raise ConfigError(f"method={spec.name} needs method.quantization.bits (one of {spec.quantization_bits})")
    if bits and bits not in spec.quantization_bits:
        raise ConfigError(f"method.quantization.bits={bits}: method={spec.name} takes one of {spec.quantization_bits}")
    if spec.peft_config:
        check_peft_keys(m, spec)
    if "adapter" in spec.sections:
        from transformers.activations import ACT2FN
        a = m.adapter
        if a.non_linearity not in ACT2FN:
            raise ConfigError(f"method.adapter.non_linearity='{a.non_linearity}' is not an activation"
                              f"{did_you_mean(a.non_linearity, ACT2FN)}; e.g. tanh, relu, gelu, silu")
        if a.bottleneck_size <= 0 or not 0 <= a.dropout < 1:
            raise ConfigError(f"method.adapter.bottleneck_size ({a.bottleneck_size}) must be positive and "
                              f"method.adapter.dropout ({a.dropout}) in [0, 1)")
        if not a.target_modules or len(set(a.target_modules)) < len(a.target_modules):
            raise ConfigError(f"method.adapter.target_modules={list(a.target_modules)}: name each place once, "
                              f"mlp or linear layers (up_proj, down_proj, gate_proj)")
        if "mlp" in a.target_modules and len(a.target_modules) > 1:
            raise ConfigError("method.adapter.target_modules: mlp already holds up_proj, down_proj and gate_proj; "
                              "name either mlp or linear layers")
    if "bitfit_targets" in spec.sections and not m.bitfit_targets:
        raise ConfigError("method.bitfit_targets is empty: name the projections that get trainable biases")


def value_fits(value, hint) -> bool:
    """Whether a config value is of a type annotation's kind (peft's config dataclasses): ints,
    floats (an int is a float), bools, strings, literals, optional, unions, lists and dicts of them.
    A type this does not know (an enum, a class) is left to peft's constructor."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if value is None:
        return hint is type(None) or (origin in (typing.Union, types.UnionType) and type(None) in args)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, a) for a in args)
    if origin is typing.Literal:  # peft writes a parameterised choice as 'pissa_niter_[number of iters]'
        return value in args or any(isinstance(a, str) and "[" in a and isinstance(value, str) and
                                    value.startswith(a.split("[")[0]) for a in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, set) or hint in (list, tuple, set):
        return isinstance(value, (list, tuple)) and all(value_fits(v, args[0]) for v in value) if args else \
            isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    return True


def type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def check_peft_keys(m, spec: methods.Method) -> None:
    """method.peft must hold keyword arguments of the method's peft config class. A key another
    method's class takes (lora_dropout in a sweep over lora and prompt_tuning) is not a typo: this run
    ignores it, and harness.config.overrides refuses it when no run of the invocation reads it."""
    import peft
    cls = getattr(peft, spec.peft_config)
    valid = methods.peft_arguments(spec.peft_config)
    elsewhere = set().union(*(methods.peft_arguments(s.peft_config) for s in methods.all_methods().values() if s.peft_config))
    for key in m.peft:
        if key not in valid and key not in elsewhere:
            raise ConfigError(f"method.peft.{key} is not a {spec.peft_config} argument"
                              f"{did_you_mean(key, valid, 'method.peft.')}; valid: {', '.join(sorted(valid))}")
    hints = typing.get_type_hints(cls)
    for key, value in OmegaConf.to_container(m.peft, resolve=True).items():
        if key in valid and key in hints and not value_fits(value, hints[key]):
            raise ConfigError(f"method.peft.{key}={value!r} is not what {spec.peft_config}.{key} takes "
                              f"({type_name(hints[key])})")
    # lora_alpha scales the update by alpha / r: 0 trains nothing that reaches the output, < 0 flips it
    for key in ("r", "num_virtual_tokens", "lora_alpha"):
        if key in m.peft and not m.peft[key] > 0:
            raise ConfigError(f"method.peft.{key}={m.peft[key]} must be positive")
    if not 0 <= m.peft.get("lora_dropout", 0) < 1:
        raise ConfigError(f"method.peft.lora_dropout={m.peft['lora_dropout']} must be in [0, 1)")
    try:  # peft's own checks (e.g. rank > 0, conflicting options), without touching a model
        peft_kwargs = {k: (list(v) if hasattr(v, "__iter__") and not isinstance(v, (str, dict)) else v)
                       for k, v in m.peft.items() if k in valid}
        cls(task_type="CAUSAL_LM", **peft_kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"method.peft for {spec.name} ({spec.peft_config}): {exc}") from None


def check_task(cfg) -> None:
    family = tasks.get_family(cfg.task.name)
    if not cfg.task.test_sets:
        raise ConfigError(f"task.test_sets=[] names no test set; name some of {list(family.test_sets)}, or leave "
                          f"the key out for all of them")
    for name in cfg.task.test_sets:
        family.test_set(name)
    train_set = family.train_set(cfg.task.train_set)
    if train_set.local and methods.get(cfg.method.name).trains:
        if not Path(train_set.local).expanduser().is_file():
            raise ConfigError(f"task.train_set={cfg.task.train_set}: file not found; give an existing .json / "
                              f".json.gz file or one of {list(family.train_sets)}")
        data.read_local(train_set.local)  # a malformed file is refused now, not after the model loaded
    _at_least(cfg, "task.max_new_tokens", 1)


def check_evaluation(cfg) -> None:
    e = cfg.eval
    for key in ("eval.batch_size", "forgetting.batch_size", "eval.num_beams"):
        _at_least(cfg, key, 1)
    for key in ("eval.limit", "forgetting.limit"):
        _at_least(cfg, key, 0, " (0 = every item)")
    if e.max_new_tokens is not None and e.max_new_tokens < 1:
        raise ConfigError(f"eval.max_new_tokens={e.max_new_tokens} must be >= 1 (or null for the task's default)")
    family = tasks.get_family(cfg.task.name)
    names = list(cfg.task.test_sets)
    for name in names:
        size = data.manifest()["files"][f"test/{name}"]["records"]
        if e.limit > size:
            raise ConfigError(f"eval.limit={e.limit} is larger than {name} ({size} items); use eval.limit=0 for "
                              f"every item, or at most {size}")
    scorings = [e.scoring, *e.also]
    if len(set(scorings)) < len(scorings):
        raise ConfigError(f"eval.also={list(e.also)} repeats a scoring (eval.scoring={e.scoring})")
    if "label" in scorings:
        bad = [n for n in names if not family.test_set(n).multiple_choice]
        if bad:
            raise ConfigError(f"eval.scoring=label (or eval.also) needs multiple-choice sets; {bad} are not "
                              f"(use task=commonsense or eval.scoring=generate)")
    if "cloze" in scorings:
        bad = [n for n in names if n not in cloze_prompts.SETS]
        if bad:
            raise ConfigError(f"eval.scoring=cloze (or eval.also) is defined for the commonsense sets ({', '.join(cloze_prompts.SETS)}); "
                              f"{bad} are not (use eval.scoring=generate, or label for AQuA)")
    if cfg.forgetting.enabled:
        suite = check_retention_suite(cfg.forgetting, cfg.task.name, family.train_set(cfg.task.train_set))
        read = [s.name for s in suite if isinstance(s, tasks.TestSet)]
        if read and not e.enabled:
            raise ConfigError(f"forgetting.enabled=true scores test sets ({', '.join(read)}) while "
                              f"eval.enabled=false keeps them unread: set forgetting.enabled=false too")


def check_retention_suite(f, task: str | None, train_set: tasks.TrainSet | None = None) -> list:
    """The retention suite (test sets scored by cloze, or held-out texts scored by cross-entropy) of
    a run of task family `task` trained on `train_set`; forgetting.test_sets empty: the family's
    out-of-domain default. Forgetting must be measured out of the run's domain: a set of the run's
    own family is its task (what is called forgetting there is in-domain improvement with the sign
    flipped), and a set whose training split the run trains on is no retention either; both are
    refused, as is a suite that mixes accuracy and cross-entropy (their units differ)."""
    if not f.test_sets and task is None:
        raise ConfigError("forgetting.test_sets is empty (the task family's default) but no task was given")
    family = tasks.get_family(task) if task is not None else None
    names = list(f.test_sets) or list(family.retention)
    if not names:
        raise ConfigError(f"task={task} declares no retention suite: set forgetting.test_sets or "
                          f"forgetting.enabled=false")
    known, texts = tasks.all_test_sets(), tasks.all_texts()
    default = f" (forgetting.test_sets=[] is task={task}'s out-of-domain default: {', '.join(family.retention)})" \
        if family is not None and family.retention else ""
    out = []
    for name in names:
        if name not in known and name not in texts:
            choices = {**known, **texts}
            raise ConfigError(f"forgetting.test_sets: unknown set '{name}'{did_you_mean(name, choices)}; "
                              f"known: {sorted(choices)}")
        if name in known and name not in cloze_prompts.SETS:
            raise ConfigError(f"forgetting.test_sets: '{name}' has no cloze prompt (a retention test set is "
                              f"scored as lm-eval does); choose from {', '.join(cloze_prompts.SETS)} or a held-out "
                              f"text ({', '.join(texts)})")
        home = tasks.home_family(name)
        if family is not None and home.name == family.name:
            raise ConfigError(f"forgetting.test_sets: '{name}' is in the domain of task={task} (a {home.name} "
                              f"{'test set' if name in known else 'text'}): forgetting measured on the run's own "
                              f"task is in-domain improvement with the sign flipped; choose sets of another "
                              f"family{default}")
        split = name if name in known else texts[name].train_split_of
        if train_set is not None and split in train_set.train_splits:
            raise ConfigError(f"forgetting.test_sets: '{name}' is no retention set for task.train_set="
                              f"{train_set.name}: that training data holds {split}'s training split{default}")
        source = f"test/{name}" if name in known else texts[name].shipped
        size = data.manifest()["files"][source]["records"]
        if f.limit > size:
            raise ConfigError(f"forgetting.limit={f.limit} is larger than {name} ({size} items); "
                              f"use at most {size}, or 0 for every item")
        out.append(known.get(name) or texts[name])
    if len({type(s) for s in out}) > 1:
        raise ConfigError(f"forgetting.test_sets={names} mixes test sets (accuracy points) and held-out texts "
                          f"(cross-entropy, nats): their forgetting has different units; choose one kind")
    if train_set is not None and train_set.local:
        _check_local_overlap(out, f.limit, train_set.local)
    return out


def _check_local_overlap(suite: list, limit: int, path: str) -> None:
    """A user's training file must not hold the retention items it would be scored on (their
    instructions, compared whitespace-normalised)."""
    trained, _ = data.read_local(path)
    seen = {" ".join(r["instruction"].split()) for r in trained}
    for s in suite:
        hits = sum(" ".join(r["instruction"].split()) in seen for r in tasks.retention_records(s, limit))
        if hits:
            raise ConfigError(f"forgetting.test_sets: task.train_set={path} holds {hits} of the items of "
                              f"retention set '{s.name}': forgetting measured on trained items is no retention; "
                              f"choose another set or remove them from the file")


_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str, t, here: bool = True) -> None:
    if not _DEVICE.match(str(device)):
        raise ConfigError(f"device='{device}': use auto, cpu, cuda or cuda:N")
    if not here:
        return
    resolved = models.resolve_device(device)  # cuda asked for but not there: a ModelError
    if t.fused_loss == "liger" and resolved.type != "cuda":
        raise ConfigError("train.fused_loss=liger needs a CUDA device; use train.fused_loss=auto or torch")


def check_processes(cfg, world: int, fsdp: bool) -> None:
    """The checks that need the process group (known once launched; run before any data is read)."""
    spec, t = methods.get(cfg.method.name), cfg.train
    if fsdp and spec.frozen_base:
        raise ConfigError("FSDP is for full fine-tuning too big for one GPU; run PEFT methods with one "
                          "process per GPU (DDP: conf/accelerate/ddp.yaml) or a single process")
    if fsdp and cfg.validation.keep_best:
        raise ConfigError("validation.keep_best cannot keep FSDP's sharded weights; set validation.keep_best=false "
                          "(or train on one process)")
    if spec.trains and (t.batch_size // t.micro_batch_size) % world:
        raise ConfigError(f"with {world} processes, train.batch_size ({t.batch_size}) must be a multiple of "
                          f"train.micro_batch_size x processes ({t.micro_batch_size * world})")


def check_against_model(cfg, model) -> None:
    """The checks that need the loaded model (run right after loading, before the method is applied
    or anything trains): the context length and the module names a recipe targets."""
    m = cfg.method
    context = getattr(getattr(model.config, "text_config", model.config), "max_position_embeddings", None)
    if methods.get(m.name).trains and context and cfg.train.cutoff_len > context:
        raise ConfigError(f"train.cutoff_len={cfg.train.cutoff_len} is beyond {cfg.model.name}'s context length "
                          f"({context} positions); set train.cutoff_len <= {context}")
    wanted = {}
    if "peft" in m and OmegaConf.is_list(m.peft.get("target_modules")):  # a string is a regex or all-linear
        wanted["method.peft.target_modules"] = list(m.peft.target_modules)
    if "bitfit_targets" in m and m.bitfit_targets:
        wanted["method.bitfit_targets"] = list(m.bitfit_targets)
    if "adapter" in methods.get(m.name).sections:  # every target a module that can take an adapter
        from harness.methods.bottleneck import KINDS, placements
        placements(model, KINDS[m.name], list(m.adapter.target_modules))
    names = [n for n, _ in model.named_modules()]
    for key, targets in wanted.items():
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if missing:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, mod in model.named_modules() if n and not any(mod.children())})
            raise ConfigError(f"{key}: {missing} name no module of {cfg.model.name}; its layers are "
                              f"{', '.join(leaves)}")
