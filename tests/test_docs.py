"""Every Python block in the README and the guides runs, so the docs cannot rot.

The blocks of one file run in order in one namespace (like a reader pasting them into
one module), inside a temporary working directory so default SQLite files land there.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m[1]) for m in BLOCK.finditer(text)]


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_python_block_runs(
    path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    postgres_url: str,
) -> None:
    blocks = python_blocks(path)
    assert blocks, f"{path.name} has no python blocks"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("POSTGRES_URL", postgres_url)
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for line, source in blocks:
        code = compile(source, f"{path.name}:{line}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point
