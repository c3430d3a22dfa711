"""The project's import graph, read from the source (every import statement, those inside
functions included): no cycle between modules, and dependencies point one way,
data_prep <- models <- train / eval <- scripts. docs/ARCHITECTURE.md names every package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

# a layer may import its own and lower layers only; train and eval do not import each other
LAYERS = {"data_prep": 0, "models": 1, "train": 2, "eval": 2, "scripts": 3}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    out = {}
    for top in LAYERS:
        for path in sorted((ROOT / top).rglob("*.py")):
            out[module_name(path)] = path
    return out


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules that `path` imports (a `from a.b import c` of a submodule counts as
    an import of a.b.c, not of the package a.b)."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def upward(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        top = src.split(".")[0]
        for dst in sorted(targets):
            other = dst.split(".")[0]
            if other != top and LAYERS[other] >= LAYERS[top]:
                bad.append(f"{src} -> {dst}")
    return bad


def test_the_checks_catch_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert upward({"models.x": {"eval.y", "data_prep.z"}, "train.t": {"eval.e"}}) == [
        "models.x -> eval.y",
        "train.t -> eval.e",
    ]


def test_function_level_and_relative_imports_are_seen(tmp_path):
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from models.weights import fetch\n    import data_prep.schema\n")
    known = {"models.weights", "models.weights.fetch", "data_prep", "data_prep.schema"}
    assert imports_of(src, "models.x", known) == {"models.weights.fetch", "data_prep.schema"}


def test_no_import_cycle():
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_dependencies_point_one_way():
    bad = upward(graph())
    assert not bad, "imports against data_prep <- models <- train / eval <- scripts:\n" + "\n".join(bad)


@pytest.mark.parametrize("top", sorted(LAYERS))
def test_architecture_doc_names_every_package(top):
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    packages = [p.parent for p in (ROOT / top).rglob("__init__.py")] or [ROOT / top]
    missing = [str(p.relative_to(ROOT)) + "/" for p in packages if str(p.relative_to(ROOT)) + "/" not in doc]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"
