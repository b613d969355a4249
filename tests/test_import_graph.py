"""No module of ``mt/`` or ``serve/`` is part of an import cycle.

Every ``.py`` file under ``mt/`` and ``serve/`` is a module (a package's ``__init__.py`` is
the package). Its edges are all its imports of ``mt.*``/``serve.*``, at module level and
inside functions alike (a lazy import still runs), except those under ``if TYPE_CHECKING:``
(they never run). ``import a.b.c`` imports ``a``, ``a.b`` and ``a.b.c``; ``from a.b import c``
imports ``a.b.c`` too when ``c`` is a submodule. Relative imports are resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Optional


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mt", "serve")

def module_names() -> dict[str, Path]:
    """``{"mt.decode.search": path, "mt.decode": path/__init__.py, ...}``."""
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements anywhere in ``tree`` except inside ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module a ``from ... import`` statement names."""
    if not node.level:
        return node.module
    package = module if is_package else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        return None
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The ``mt``/``serve`` modules that ``module`` (the file ``path``) imports."""
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(_with_parents(alias.name))
            continue
        base = _base(module, path.name == "__init__.py", node)
        if base is None:
            continue
        found.update(_with_parents(base))
        found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
    return {m for m in found if m in modules and m != module}


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
    return out


def one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, as ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return paths[node] + [start]
                if child not in paths:
                    paths[child] = paths[node] + [child]
                    nxt.append(child)
        frontier = nxt
    return component


def describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    return "\n".join(f"  {' -> '.join(one_cycle(graph, c))}   (component: {', '.join(c)})" for c in components)


def test_graph_sees_lazy_and_relative_imports() -> None:
    graph = import_graph()
    assert "serve.app" in graph and "mt" in graph and "mt.decode" in graph
    assert "mt.train.trainer" in graph["mt.cli"]  # a function-level import
    assert {"serve", "serve.settings"} <= graph["serve.schemas"]  # the package counts too


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + describe(graph, cycles)
