"""`python -m harness.docs_reference [--check]`: the configuration reference of docs/configuration.md,
generated from the typed schema so that it cannot go stale (`make docs` runs it).

Every key of a run config (harness.config.RunConfig, dotted: `train.max_steps`) and of a study
preset (harness.study.StudyConfig: `study.lr_grid`), with its type, its default and the comment that
explains it: a field's `metadata["doc"]` when it has one, else the `#` comments on its line and
directly above it in the source (read with tokenize), never a description typed twice. Closed
choices list their values with their own comments; the config groups list their YAML files. Only
the text between the markers below is replaced; the rest of the file is written by hand.

`--check` writes nothing and exits 1 when the file differs from what would be generated
(tests/test_docs.py runs it in-process), 2 when the file or its markers are missing.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import enum
import inspect
import io
import sys
import textwrap
import tokenize
import typing
from pathlib import Path

from omegaconf import MISSING

REPO = Path(__file__).resolve().parents[1]
DEFAULT_FILE = REPO / "docs" / "configuration.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"


# ---- comments from the source ----------------------------------------------------------------

def source_comments(cls) -> dict[str, str]:
    """Name -> the comment that explains it, for the fields (or enum members) of class `cls`: the
    comment lines right above the name's statement, then the comment on its line(s)."""
    source = textwrap.dedent(inspect.getsource(cls))
    on_line: dict[int, list[str]] = {}
    code_lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            on_line.setdefault(tok.start[0], []).append(tok.string.lstrip("#").strip())
        elif tok.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                              tokenize.ENDMARKER):
            code_lines.update(range(tok.start[0], tok.end[0] + 1))
    klass = ast.parse(source).body[0]
    out = {}
    for node in klass.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue
        above, line = [], node.lineno - 1
        while line in on_line and line not in code_lines:  # a comment-only line directly above
            above = on_line[line] + above
            line -= 1
        trailing = [c for n in range(node.lineno, node.end_lineno + 1) if n in code_lines for c in on_line.get(n, [])]
        text = "; ".join(" ".join(part).strip() for part in (above, trailing) if part)
        if text:
            out[name] = text
    return out


def class_doc(cls) -> str:
    """The class's own docstring (not the signature dataclasses put there when it has none)."""
    doc = ast.get_docstring(ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0])
    return " ".join((doc or "").split())


# ---- values and types ------------------------------------------------------------------------

def choice_class(hint):
    """The enum a type annotation holds (directly, in Optional or in a list), or None."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    for arg in typing.get_args(hint):
        found = choice_class(arg)
        if found is not None:
            return found
    return None


def yaml_value(value) -> str:
    """A default as it would be written in a YAML file or on the command line."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {yaml_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def default_of(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if value is MISSING or value == MISSING:
        return "(required: the group's YAML sets it)"
    if isinstance(value, str) and value.startswith("${task_family:"):
        return "the task family's (`harness/tasks/<task>.py`)"
    return f"`{yaml_value(value)}`" if value != "" else '`""`'


def type_of(f: dataclasses.Field, hint) -> str:
    return f"`{f.type if isinstance(f.type, str) else getattr(hint, '__name__', str(hint))}`"


def cell(text: str) -> str:
    """Markdown table cell: pipes escaped, one line."""
    return " ".join(str(text).split()).replace("|", "\\|")


# ---- the tables ------------------------------------------------------------------------------

def field_rows(cls, prefix: str) -> list[tuple[str, str, str, str]]:
    """(key, type, default, what) for every field of schema dataclass `cls`, nested sections
    flattened under their own row."""
    hints = typing.get_type_hints(cls)
    comments = source_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        hint, key = hints[f.name], f"{prefix}{f.name}"
        what = f.metadata.get("doc") or f.metadata.get("help") or comments.get(f.name, "")
        if dataclasses.is_dataclass(hint):
            if prefix:  # a nested section: one row saying what it is, then its keys
                rows.append((key, "section", "", what or class_doc(hint)))
                rows += field_rows(hint, key + ".")
            continue
        choices = choice_class(hint)
        if choices is not None:
            member_notes = source_comments(choices)
            listed = ", ".join(f"`{m.value}`" + (f" ({member_notes[m.name]})" if m.name in member_notes else "")
                               for m in choices)
            many = typing.get_origin(hint) in (list, tuple)
            what = (what + "; " if what else "") + ("each one of " if many else "one of ") + listed
        rows.append((key, type_of(f, hint), default_of(f), what))
    return rows


def table(rows) -> list[str]:
    out = ["| key | type | default | what it does |", "|---|---|---|---|"]
    out += [f"| `{k}` | {cell(t)} | {cell(d)} | {cell(w)} |" for k, t, d, w in rows]
    return out


def readers(section: str) -> list[str]:
    """Who reads which keys of a section where that depends on the choice: the model keys of each
    model source (harness.config.MODEL_KEYS_BY_SOURCE), the method sections of each method (its
    registry entry). Setting a key the chosen model or method does not read is an error."""
    if section == "model":
        from harness.config import MODEL_KEYS_BY_SOURCE
        out = ["Keys each `model.source` reads (another source's key is refused):", ""]
        out += [f"- `{source.value}`: " + ", ".join(f"`model.{k}`" for k in keys) for source, keys in
                MODEL_KEYS_BY_SOURCE.items()]
        return out + [""]
    if section == "method":
        from harness import methods
        specs = methods.all_methods()
        out = ["What each method reads beyond `method.lr` (its registry entry, `harness/methods/`; a section "
               "it does not read is refused), and the peft config class whose keyword arguments "
               "`method.peft.*` are:", "", "| method | sections | peft config class | quantised base |",
               "|---|---|---|---|"]
        for name, spec in specs.items():
            sections = ", ".join(f"`method.{s}`" for s in spec.sections) or (
                "(does not train)" if not spec.trains else "(`method.lr` only)")
            quant = {"none": "no", "optional": "optional", "required": "required"}.get(spec.quantization,
                                                                                      spec.quantization)
            if spec.quantization != "none":
                quant += " (" + "/".join(str(b) for b in spec.quantization_bits) + "-bit)"
            out.append(f"| `{name}` | {sections} | {spec.peft_config or ''} | {quant} |")
        return out + [""]
    return []


def generate() -> str:
    """The generated part of docs/configuration.md (between the markers)."""
    from harness import config
    from harness.config.overrides import group_choices
    from harness.study import StudyConfig
    lines = ["<!-- generated by `python -m harness.docs_reference` (make docs) from harness/config/__init__.py and "
             "harness/study.py; edit those, not this -->", ""]
    lines += ["### Config groups", "",
              "A group's value names a YAML file of `conf/<group>/`; `model=` also takes a hub id or a local "
              "directory (`model=hub model.name_or_path=...`).", "",
              "| group | choices |", "|---|---|"]
    lines += [f"| `{g}=` | {', '.join(f'`{c}`' for c in group_choices(g))} |" for g in config.GROUPS]
    lines += [f"| `study=` (`python -m harness.study`) | {', '.join(f'`{c}`' for c in group_choices('study'))} |", ""]
    lines += ["Free-form sections (their keys are checked against what reads them, not against this "
              "schema): " + ", ".join(f"`{s}`" for s in config.FREE_FORM) + ".", ""]
    run = config.RunConfig
    hints = typing.get_type_hints(run)
    top = [f for f in dataclasses.fields(run) if not dataclasses.is_dataclass(hints[f.name])]
    sections = [f for f in dataclasses.fields(run) if dataclasses.is_dataclass(hints[f.name])]
    for f in sections:
        section = hints[f.name]
        lines += [f"### `{f.name}`", ""]
        doc = class_doc(section)
        if doc:
            lines += [doc, ""]
        lines += table(field_rows(section, f.name + ".")) + [""]
        lines += readers(f.name)
    lines += ["### Top-level keys", ""]
    lines += table([r for r in field_rows(run, "") if r[0] in {f.name for f in top}]) + [""]
    lines += ["### `study`", "", "A study preset (`conf/study/<name>.yaml`, read by `python -m harness.study "
              "study=<name>`); `study.<key>=<value>` on that command line overrides one of its keys.", ""]
    doc = class_doc(StudyConfig)
    if doc:
        lines += [doc, ""]
    lines += table(field_rows(StudyConfig, "study.")) + [""]
    return "\n".join(lines)


def splice(text: str, content: str) -> str | None:
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        return None
    return text[:start + len(START)] + "\n" + content.rstrip("\n") + "\n" + text[end:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.docs_reference", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="exit 1 when the file is not what would be generated")
    p.add_argument("--file", default=str(DEFAULT_FILE), help="the Markdown file holding the markers "
                                                              "(default docs/configuration.md)")
    args = p.parse_args(argv)
    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return 2
    text = path.read_text()
    new = splice(text, generate())
    if new is None:
        print(f"error: {path}: no {START} ... {END} markers (add them where the reference goes)", file=sys.stderr)
        return 2
    if args.check:
        if new != text:
            print(f"{path}: the configuration reference is stale: run `make docs` "
                  f"(python -m harness.docs_reference)", file=sys.stderr)
            return 1
        print(f"{path}: configuration reference up to date")
        return 0
    if new != text:
        from harness.record import atomic
        atomic.write_text(path, new)
        print(f"{path}: configuration reference written")
    else:
        print(f"{path}: configuration reference unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
