"""The shape of the codebase, as specifications: no import cycle (lazy imports inside functions
count: they hide a cycle, they do not remove it), no private Hydra API, modules and functions small
enough to read."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "harness"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (functions included)."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in paths}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(package[:len(package) - node.level + 1] + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    deps.add(target if target in paths else base)
        graph[name] = {d for d in deps if d in paths and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n")
    (pkg / "c.py").write_text("from . import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_package_has_no_import_cycle():
    assert cycles(import_graph(PACKAGE)) == []


# Packages below the run pipeline: what records, statistics, reports, registries and data are does
# not depend on how a run is carried out (docs/architecture.md, "Packages")
BELOW_THE_PIPELINE = ("record", "analysis", "report", "regress", "tasks", "methods", "data", "ui")


def test_no_package_below_the_pipeline_imports_it():
    graph = import_graph(PACKAGE)
    upward = sorted((m, d) for m, deps in graph.items() for d in deps
                    if m.split(".")[1:2] and m.split(".")[1] in BELOW_THE_PIPELINE and d.startswith("harness.pipeline"))
    assert not upward, upward


def test_no_private_hydra_api():
    users = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py") if "hydra._internal" in p.read_text()]
    assert users == []


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [f"{path.name}:{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > MAX_FUNCTION_LINES]


@pytest.mark.parametrize("limit", ["module", "function"])
def test_modules_and_functions_stay_small(limit):
    files = sorted(PACKAGE.rglob("*.py"))
    if limit == "module":
        big = [f"{p.relative_to(PACKAGE)} ({n} lines)" for p in files
               if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES]
    else:
        big = [f for p in files for f in long_functions(p)]
    assert big == []


def test_the_size_checks_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n")
    assert long_functions(tmp_path / "m.py") == [f"m.py:f ({MAX_FUNCTION_LINES + 2} lines)"]
