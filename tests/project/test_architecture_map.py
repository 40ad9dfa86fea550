"""``docs/architecture.md`` stays true (issue 27, item 5).

Every module and file it names exists; every name its write-policy table points at is
defined in the package; its layer table places each module of the package exactly once,
and no module imports from a layer above its own (the graph of ``tools/import_graph.py``).
"""

from __future__ import annotations

import importlib
import re

from tools.import_graph import PACKAGE, import_graph

ROOT = PACKAGE.parent
MAP = ROOT / "docs" / "architecture.md"
TEXT = MAP.read_text(encoding="utf-8")


def _section(title: str) -> str:
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", TEXT, re.S | re.M)
    assert found is not None, f"docs/architecture.md has no '## {title}' section"
    return found.group(1)


def _layers() -> dict[str, int]:
    """The layer table: each module's dotted name and its layer."""
    block = re.search(r"```text\n(.*?)```", _section("Layers"), re.S)
    assert block is not None, "the Layers section has no ```text block"
    layers: dict[str, int] = {}
    for line in block.group(1).splitlines():
        layer, *names = line.split()
        for name in names:
            dotted = PACKAGE.name if name == "__init__" else f"{PACKAGE.name}.{name}"
            assert dotted not in layers, f"{name} is in the layer table twice"
            layers[dotted] = int(layer)
    return layers


def test_every_file_the_map_names_exists() -> None:
    paths = set(re.findall(r"(?<![\w/<>.-])((?:[\w.-]+/)+[\w.-]+\.(?:py|lua|sql|md))\b", TEXT))
    assert "asgi_sessions/stores/lua/write.lua" in paths  # the pattern finds them
    assert sorted(path for path in paths if not (ROOT / path).is_file()) == []


def test_every_module_the_map_names_exists() -> None:
    modules = import_graph().keys()
    missing = []
    for dotted in set(re.findall(rf"\b{PACKAGE.name}(?:\.\w+)+", TEXT)):
        parts = dotted.split(".")
        # The longest prefix that is a module; anything after it must be a name in it.
        cut = max(n for n in range(1, len(parts) + 1) if ".".join(parts[:n]) in modules)
        found: object = importlib.import_module(".".join(parts[:cut]))
        for attribute in parts[cut:]:
            found = getattr(found, attribute, None)
        if found is None:
            missing.append(dotted)
    assert sorted(missing) == []


def test_every_name_in_the_write_policy_table_is_defined_in_the_package() -> None:
    sources = "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(PACKAGE.rglob("*"))
        if path.is_file()
        if path.suffix in (".py", ".sql", ".lua")
    )
    names = re.findall(r"`([A-Za-z_]\w*(?:\.\w+)?)`", _section("Where the write policy lives"))
    undefined = [
        name
        for name in set(names)
        if not re.search(rf"^\s*(?:async def|def|class) {name.split('.')[-1]}\b", sources, re.M)
    ]
    assert names and sorted(undefined) == []


def test_the_layer_table_places_every_module_of_the_package_once() -> None:
    assert sorted(_layers()) == sorted(import_graph())


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    layers = _layers()
    upward = [
        f"{name} (layer {layers[name]}) imports {target} (layer {layers[target]})"
        for name, targets in import_graph().items()
        for target in sorted(targets)
        if layers[target] > layers[name]
    ]
    assert upward == []
