"""The store in docs/stores.md passes the shared behaviour suite, the way the guide says.

The example is read from the guide at run time (so the guide cannot drift). In process,
this module collects ``tests/behaviour/store_suite.py``'s tests with its ``store`` fixture
and a ``session_store`` fixture for the example; one test also runs the guide's own
command, ``python -m pytest tests/behaviour/store_suite.py -p my_store_fixture``, in a
subprocess, as a store author outside this project would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asgi_sessions import Store
from tests.behaviour import store_suite
from tests.clock import FakeClock

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "stores.md"


def _blocks(fence: str) -> list[str]:
    return re.findall(rf"^```{fence}\n(.*?)^```", GUIDE.read_text(), re.S | re.M)


def _example_store() -> type[Store]:
    namespace: dict[str, Any] = {"__name__": "docs_stores"}
    code = compile(_blocks("python")[0], "docs/stores.md", "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102
    store_class: type[Store] = namespace["DictStore"]
    return store_class


DictStore = _example_store()


@pytest.fixture
async def session_store(clock: FakeClock) -> AsyncIterator[Store]:
    async with DictStore(clock=clock) as opened:
        yield opened


store = store_suite.store
globals().update(store_suite.shared_tests())


def test_the_shared_suite_ran_here() -> None:
    assert sum(name.startswith("test_") and "__test_" in name for name in globals()) >= 20


def test_the_guides_command_runs_the_suite_against_the_example(tmp_path: Path) -> None:
    """The guide's plugin module (its store block and its fixture block) and command."""
    (command,) = [line for line in _blocks("sh")[0].splitlines() if "store_suite" in line]
    assert command == "python -m pytest tests/behaviour/store_suite.py -p my_store_fixture"
    store_block, fixture_block = _blocks("python")[:2]
    (tmp_path / "my_store_fixture.py").write_text(store_block + "\n" + fixture_block)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    argv = [sys.executable, *command.split()[1:], "-q", "-x", "-p", "no:cacheprovider"]
    result = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed is not None and int(passed[1]) >= 20, result.stdout[-1000:]


def test_the_suite_says_what_is_missing_without_a_fixture() -> None:
    """Run without ``-p``, each test fails with the one-line fix, not a fixture dump."""
    argv = [sys.executable, "-m", "pytest", "tests/behaviour/store_suite.py", "-q", "-x"]
    argv += ["-p", "no:cacheprovider", "-k", "test_clear_expired_removes_exactly"]
    result = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 1
    assert "No session_store fixture" in result.stdout
