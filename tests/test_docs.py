"""The documentation matches the code: README.md and docs/*.md name only keys, commands, modules,
links and files that exist, the configuration reference is what the schema generates, and the
README stays a page. Each checker is a function of text, fed a wrong example too, so that each
check is seen to fail. In-process, no subprocess."""
from __future__ import annotations

import dataclasses
import importlib.util
import re
from functools import lru_cache
from pathlib import Path

import pytest

from harness import config, docs_reference
from harness.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
README_LIMIT = 12 * 1024


def documents() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


# ---- what the documents say, as code ---------------------------------------------------------

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`]+)`")  # a span may wrap a line


def code_of(text: str) -> list[str]:
    """Every piece of code a Markdown text holds: each line of a fenced block, each inline span."""
    blocks = FENCE.findall(text)
    prose = FENCE.sub("", text)
    return [line for b in blocks for line in b.splitlines()] + [" ".join(s.split()) for s in SPAN.findall(prose)]


def tokens_of(text: str) -> list[str]:
    return [t.strip("\"'.,;:()") for piece in code_of(text) for t in piece.split()]


# ---- (a) config keys and overrides -----------------------------------------------------------

PLACEHOLDER = re.compile(r"[<>{}…$*|\[\]]|\.\.\.")
FILE_NAME = re.compile(r"\.(py|ya?ml|md|json|jsonl|sh|csv|txt|png|gz|tex|log)$")
# inputs the documents quote as refused (docs/guarantees.md): they must stay refused
REFUSED_EXAMPLES = {"method=method_schema"}


@lru_cache(maxsize=1)
def _sections() -> set[str]:
    """The names a config key or override can start with: the schema's top-level keys (sections
    and single values), the config groups and the study presets' `study`."""
    return {f.name for f in dataclasses.fields(config.RunConfig)} | set(config.GROUPS) | {"study"}


@lru_cache(maxsize=1)
def _peft_arguments() -> set[str]:
    """What method.peft may hold: the keyword arguments of some registered method's peft config class."""
    from harness import methods
    return set().union(*(methods.peft_arguments(s.peft_config) for s in methods.all_methods().values()
                         if s.peft_config))


def key_problem(token: str) -> str | None:
    """Why `token` (`key=value` or a dotted `section.key`) names no config key or choice; None when
    it does, or when it is not a config key at all (a record field, a shell variable, prose)."""
    from harness.config.overrides import group_choices, key_kind
    token = token.lstrip("+~")
    key, eq, value = token.partition("=")
    first = key.split(".")[0]
    if not key or first not in _sections() or (not eq and "." not in key) or (eq and not value):
        return None
    if FILE_NAME.search(key) or token in REFUSED_EXAMPLES:  # a file name (train.py); a quoted refusal
        return None
    key = re.sub(r"\.\*$", "", key)
    if PLACEHOLDER.search(key):
        return None
    if not key.replace(".", "").replace("_", "").replace("-", "").isalnum():
        return None
    if key in (*config.GROUPS, "study") and eq:  # a choice: method=lora, study=cpu-study, model=<hub id>
        for choice in value.split(","):
            if PLACEHOLDER.search(choice) or choice.startswith("glob(") or (key == "model" and "/" in choice):
                continue
            if choice not in group_choices(key) and not (key == "sweep" and choice == "null"):
                return f"{token}: no conf/{key}/{choice}.yaml"
        return None
    if first == "study" and key != "study":
        from harness.study import StudyConfig
        name = key.split(".", 1)[1]
        if name not in {f.name for f in dataclasses.fields(StudyConfig)}:
            return f"{token}: study presets have no key '{name}' (harness.study.StudyConfig)"
        return None
    try:
        kind = key_kind(key)
    except ConfigError as exc:
        return f"{token}: {exc}"
    parts = key.split(".")
    if kind == "free" and parts[:2] == ["method", "peft"] and parts[2] not in _peft_arguments():
        return f"{token}: method.peft.{parts[2]} is no argument of any method's peft config class"
    return None


def key_problems(text: str) -> list[str]:
    return [p for p in map(key_problem, tokens_of(text)) if p]


def test_quoted_refusals_are_still_refused():
    from harness.config.overrides import check_names
    for example in REFUSED_EXAMPLES:
        with pytest.raises(ConfigError):
            check_names([example])


def test_key_checker_reports_what_does_not_exist():
    bad = ("`train.max_stepz=3` `eval.scorng` `method=lorra` `method.peft.rr=4` `study.lr_gird` "
           "`sweep=nightly` `forgetting.limit.items`")
    assert len(key_problems(bad)) == 7, key_problems(bad)
    good = ("`train.max_steps=3` `eval.scoring` `method=lora` `method.peft.lora_alpha=8` `study.lr_grid` "
            "`model=Qwen/Qwen2.5-0.5B` `method.adapter.*` `eval.<set>.scoring` `tags.study` `SWEEP=paper` "
            "`train_info.levers` `seed=1,2,3`\n```\npython -m harness -m method=lora,dora task=arithmetic\n```\n")
    assert key_problems(good) == []


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_documented_keys_exist(doc):
    assert key_problems(doc.read_text()) == []


# ---- (b) make targets ------------------------------------------------------------------------

MAKE = re.compile(r"\bmake\s+([A-Za-z][\w-]*)")


def make_targets(makefile: str) -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w.-]*)\s*:(?!=)", makefile, re.M))


def make_problems(text: str, targets: set[str]) -> list[str]:
    return [f"make {t}: no such target in the Makefile" for piece in code_of(text)
            for t in MAKE.findall(piece) if t not in targets]


def test_make_checker_reports_a_missing_target():
    targets = make_targets("all: x\n\ttrue\nPY := python\nsweep: $(STAMP)\n")
    assert targets == {"all", "sweep"}
    assert make_problems("run `make sweep`, then `make publish`", targets) == [
        "make publish: no such target in the Makefile"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_documented_make_targets_exist(doc):
    assert make_problems(doc.read_text(), make_targets((REPO / "Makefile").read_text())) == []


# ---- (c) python -m harness.<module> ----------------------------------------------------------

MODULE = re.compile(r"python3?\s+-m\s+(harness(?:\.\w+)*)")


def module_problem(name: str) -> str | None:
    """None when `python -m <name>` would run: a module, or a package with a __main__."""
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    if spec is None:
        return f"python -m {name}: no such module"
    if spec.submodule_search_locations is not None and importlib.util.find_spec(name + ".__main__") is None:
        return f"python -m {name}: a package without __main__"
    return None


def module_problems(text: str) -> list[str]:
    return [p for p in map(module_problem, sorted(set(MODULE.findall(text)))) if p]


def test_module_checker_reports_a_missing_module():
    assert module_problems("`python -m harness.report` and `python -m harness.vram --table`") == []
    assert module_problems("`python -m harness.reprot`") == ["python -m harness.reprot: no such module"]
    assert module_problems("python -m harness.methods") == ["python -m harness.methods: a package without __main__"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_documented_modules_run(doc):
    assert module_problems(doc.read_text()) == []


# ---- (d) relative links and repository paths --------------------------------------------------

LINK = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
REPO_PATH = re.compile(r"^(?:harness|conf|tests|tools|docs|hydra_plugins|\.ci|results/(?:baselines|gpu|bench))/[\w./-]*$"
                       r"|^test_[\w*]+\.py$")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", text), re.M)}


def link_problems(text: str, where: Path) -> list[str]:
    """Relative links that point at no file (or at no heading of a Markdown file), and repository
    paths written as code that do not exist."""
    prose = SPAN.sub("", FENCE.sub("", text))
    problems = []
    for target in LINK.findall(prose):
        if re.match(r"^[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (where.parent / path).resolve() if path else where
        if not file.exists():
            problems.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            problems.append(f"{target}: no heading '#{anchor}' in {file.name}")
    for piece in code_of(text):
        for token in piece.split():
            token = token.strip("\"'.,;:()")
            if REPO_PATH.match(token) and not PLACEHOLDER.search(token.replace("*", "")):
                found = list(REPO.glob("tests/" + token)) if token.startswith("test_") else \
                    [REPO / token] if (REPO / token).exists() else []
                if not found:
                    problems.append(f"{token}: no such file in the repository")
    return problems


def test_link_checker_reports_broken_links_and_paths(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Other\n\n## A section (with `code`)\n")
    text = page_text = ("[ok](other.md) [ok](other.md#a-section-with-code) [web](https://example.org) [self](#title)\n"
            "# Title\n[gone](missing.md) [no heading](other.md#nowhere) `harness/nowhere.py` `harness/config/__init__.py` "
            "`test_nothing.py` `test_method_zoo*.py` `results/runs/<run-id>.json`\n")
    page.write_text(page_text)
    assert link_problems(text, page) == ["missing.md: no such file", "other.md#nowhere: no heading '#nowhere' in "
                                         "other.md", "harness/nowhere.py: no such file in the repository",
                                         "test_nothing.py: no such file in the repository"]


@pytest.mark.parametrize("doc", documents(), ids=lambda p: p.name)
def test_links_and_paths_resolve(doc):
    assert link_problems(doc.read_text(), doc) == []


# ---- (e) the generated configuration reference ------------------------------------------------

def test_configuration_reference_is_generated_from_the_schema(capsys):
    assert docs_reference.main(["--check"]) == 0, capsys.readouterr().err


def test_reference_check_fails_on_a_stale_file(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    text = (REPO / "docs" / "configuration.md").read_text()
    stale.write_text(text.replace("| `train.max_steps` |", "| `train.max_step` |"))
    assert docs_reference.main(["--check", "--file", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    stale.write_text("no markers\n")
    assert docs_reference.main(["--check", "--file", str(stale)]) == 2


def test_reference_takes_comments_from_the_source():
    rows = {key: what for key, _, _, what in docs_reference.field_rows(config.TrainConfig, "train.")}
    assert rows["train.batch_size"] == "effective batch (examples per optimizer step)"
    assert rows["train.max_steps"].startswith("max_steps > 0: train exactly this many optimizer steps")
    assert "`generate` (generate, then extract" in {k: w for k, _, _, w in
                                                   docs_reference.field_rows(config.EvalConfig, "eval.")}["eval.scoring"]


# ---- (f) the README stays one page -----------------------------------------------------------

def size_problem(path: Path, limit: int = README_LIMIT) -> str | None:
    size = path.stat().st_size
    return f"{path.name} is {size} bytes, over {limit}: move detail to docs/" if size > limit else None


def test_size_checker_reports_a_long_page(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("x" * 101)
    assert size_problem(page, 100) and size_problem(page, 101) is None


def test_readme_is_at_most_12_kb():
    assert size_problem(REPO / "README.md") is None
