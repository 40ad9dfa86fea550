"""The package's imports run one way (STYLE.md, "One import direction"; issue 27, item 1).

No module imports another that imports it back, counting every import: at module level,
under ``TYPE_CHECKING`` and inside functions. No module imports the ``__init__`` of a
package it belongs to. ``tools/import_graph.py --check`` (in ``make lint``) says the same
from a shell; the last tests show the checker finds what it must.
"""

from __future__ import annotations

from pathlib import Path

from tools.import_graph import find_cycles, import_graph, main, package_imports


def test_no_module_imports_another_that_imports_it_back() -> None:
    assert find_cycles(import_graph()) == []


def test_no_module_imports_the_package_it_belongs_to() -> None:
    assert package_imports(import_graph()) == []


def test_the_expiry_rule_imports_nothing_of_ours() -> None:
    # Ground for the session layer and every store alike (issue 27, item 2).
    assert import_graph()["asgi_sessions.expiry"] == set()


def test_the_check_passes_from_a_shell() -> None:
    assert main(["--check"]) == 0


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_checker_counts_lazy_and_type_checking_imports(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n",
            "b.py": "def f():\n    from . import c\n",
            "c.py": "import pkg.a\n",
            "d.py": "from .a import x\n",
        },
    )
    graph = import_graph(package)
    assert graph["pkg.a"] == {"pkg.b"}
    assert graph["pkg.b"] == {"pkg.c"}  # `from . import c`: the module, not the package
    assert find_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_the_checker_names_a_module_that_imports_its_own_package(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "__init__.py": "__version__ = '1'\n",
            "cli.py": "from . import __version__\n",
            "sub/__init__.py": "from .leaf import thing\n",
            "sub/leaf.py": "from ..sub import other\n",
        },
    )
    graph = import_graph(package)
    # No cycle through pkg (its __init__ imports nothing), and still a break of the rule.
    assert package_imports(graph) == [("pkg.cli", "pkg"), ("pkg.sub.leaf", "pkg.sub")]
    # sub's __init__ imports leaf, which imports sub's __init__ back: a cycle as well.
    assert find_cycles(graph) == [["pkg.sub", "pkg.sub.leaf", "pkg.sub"]]
