"""The core's packages form layers: no import cycle between ``mudo_app`` subpackages, nor between modules.

Imports are read from the source (every ``import`` statement, including those inside functions, which
is where cycles hide), so a cycle is found even when it never fires at import time.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import mudo_app

ROOT = Path(mudo_app.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("mudo_app", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every mudo_app module imported anywhere in ``path`` (``from pkg import name`` counts as ``pkg.name``
    when that is a module, else as ``pkg``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mudo_app"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mudo_app":
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in MODULES else node.module)
    return found


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _graph(key) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        src = key(name)
        for target in _imports(path):
            dst = key(target)
            if src and dst and src != dst:
                graph.setdefault(src, set()).add(dst)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _subpackage(name: str) -> str | None:
    """``mudo_app.train.trainer`` -> ``train``; a top-level module is its own node (``mudo_app.labels``)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # ``mudo_app`` itself: only the version


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_no_import_cycle_between_subpackages():
    graph = _graph(_subpackage)
    assert "train" in graph and "distill" in graph  # the graph is really read
    assert _cycle(graph) is None, f"import cycle between mudo_app subpackages: {' -> '.join(_cycle(graph))}"


def test_no_import_cycle_between_modules():
    """Module level, packages' ``__init__`` re-exports left out (they import their own modules by design)."""

    def module(name: str) -> str | None:
        return None if MODULES[name].name == "__init__.py" else name

    graph = _graph(lambda n: module(n) if n in MODULES else None)
    assert _cycle(graph) is None, f"import cycle between mudo_app modules: {' -> '.join(_cycle(graph))}"


@pytest.mark.parametrize(
    "name", sorted(m.name for m in pkgutil.walk_packages(mudo_app.__path__, "mudo_app.") if "__main__" not in m.name)
)
def test_every_module_imports(name):
    importlib.import_module(name)


def _outside_imports() -> list[tuple[str, str, str]]:
    """``(file, module, name)`` of every ``from mudo_app... import name`` in the adapters, the app and the
    scripts: code no test imports as a whole, where a moved name would only fail when it runs."""
    repo = ROOT.parent
    found = []
    for folder in ("lib", "apps", "sample-datasets/scripts"):
        for path in sorted((repo / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mudo_app":
                    found += [(str(path.relative_to(repo)), node.module, a.name) for a in node.names]
    return found


def test_every_core_name_the_adapters_and_scripts_import_exists():
    missing = []
    for where, module, name in _outside_imports():
        mod = importlib.import_module(module)
        if not hasattr(mod, name) and f"{module}.{name}" not in MODULES:
            missing.append(f"{where}: from {module} import {name}")
    assert len(_outside_imports()) > 50 and not missing, missing
