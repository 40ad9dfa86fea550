"""The package's import graph, and what breaks its one direction: ``python tools/import_graph.py``.

Every ``import`` counts, wherever it stands: at module level, under ``TYPE_CHECKING`` and
inside a function. A lazy or typing-only import still says that one file needs another,
and a circle says two files are one thing split in two (STYLE.md, "One import direction").

The graph is drawn at module granularity: ``from .x import y`` is an edge to ``x`` (or to
``x.y`` when that is a module); ``from . import x`` is an edge to ``x`` when it is a module,
else to the package's ``__init__``. Two rules must hold:

- no cycle;
- no module imports the ``__init__`` of a package it belongs to. A package ``__init__`` is
  the facade over its modules: it may import them to re-export their names, and Python
  runs it before any of them, so a module that imports it back only works by the order of
  its lines. (``asgi_sessions.stores`` importing ``asgi_sessions.stores.memory`` is fine;
  ``asgi_sessions.cli`` importing ``asgi_sessions`` for ``__version__`` is not.)

Without ``--check`` it prints one line per module, the package modules it imports
(``-``: none); either way it exits 1, naming each break of the rules, if there is one.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping, Set
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "asgi_sessions"

Graph = dict[str, set[str]]


def module_names(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    names = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _reached(
    node: ast.Import | ast.ImportFrom, module: str, is_package: bool, modules: Set[str]
) -> Iterator[str]:
    """The package modules one import statement reaches."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names if alias.name in modules)
        return
    parts = module.split(".")
    # A relative import counts from the package the module is in (a package: itself).
    parts = parts[: len(parts) - node.level + is_package] if node.level else []
    source = ".".join([*parts, *([node.module] if node.module else [])])
    names = [f"{source}.{alias.name}" for alias in node.names]
    yield from (name for name in names if name in modules)
    # `from . import x` of a module x needs x, not the package it was named through.
    if source in modules and not all(name in modules for name in names):
        yield source


def import_graph(package: Path = PACKAGE) -> Graph:
    """Each module and the modules of the package it imports."""
    modules = module_names(package)
    graph: Graph = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            reached = _reached(node, name, is_package, modules.keys())
            graph[name].update(target for target in reached if target != name)
    return graph


def find_cycles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """The cycles to break: for each module caught in one, the shortest path from it back
    to itself (listed once, however many of its modules lead to it), sorted."""
    cycles: dict[tuple[str, ...], list[str]] = {}
    for group in _circles(graph):
        for start in group:
            cycle = _shortest_cycle(start, group, graph)
            turn = cycle.index(min(cycle[:-1]))
            canonical = (*cycle[turn:-1], *cycle[:turn])
            cycles.setdefault(canonical, [*canonical, canonical[0]])
    return sorted(cycles.values())


def package_imports(graph: Mapping[str, Set[str]]) -> list[tuple[str, str]]:
    """``(module, package)`` for each module that imports a package it belongs to."""
    return sorted(
        (name, target)
        for name, targets in graph.items()
        for target in targets
        if name.startswith(target + ".")
    )


def problems(graph: Mapping[str, Set[str]]) -> list[str]:
    """Every break of the two rules, one sentence each (none: the graph is one-way)."""
    found = [f"import cycle: {' -> '.join(cycle)}" for cycle in find_cycles(graph)]
    found += [
        f"{name} imports {package}, the package it belongs to: import the module that "
        "defines the name instead"
        for name, package in package_imports(graph)
    ]
    return found


def _circles(graph: Mapping[str, Set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:  # recursion is fine: a package is never that deep
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def _shortest_cycle(start: str, group: Set[str], graph: Mapping[str, Set[str]]) -> list[str]:
    """A shortest path from ``start`` back to itself, inside its strongly connected group."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & group):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"{start} is in no cycle of {sorted(group)}")  # a group has one


def main(argv: list[str]) -> int:
    graph = import_graph()
    if "--check" not in argv:
        for name in sorted(graph):
            print(f"{name}: {', '.join(sorted(graph[name])) or '-'}")
    found = problems(graph)
    for problem in found:
        print(problem, file=sys.stderr)
    if not found and "--check" in argv:
        print(f"{PACKAGE.name}: {len(graph)} modules, one import direction (no cycle).")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
