"""The store in docs/stores.md passes the shared behaviour tests of every bundled store.

The example is read from the guide at run time (so the guide cannot drift), and each test
of the shared modules that takes the ``store`` fixture runs here with that fixture
overridden: the way a third-party store author points the suite at their store.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from asgi_sessions import Store
from tests import test_session_api, test_stores, test_write_policy
from tests.clock import FakeClock

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "stores.md"
SHARED = (test_stores, test_session_api, test_write_policy)


def _example_store() -> type[Store]:
    first = re.search(r"^```python\n(.*?)^```", GUIDE.read_text(), re.S | re.M)
    assert first is not None
    namespace: dict[str, Any] = {"__name__": "docs_stores"}
    exec(compile(first[1], "docs/stores.md", "exec", dont_inherit=True), namespace)  # noqa: S102
    store_class: type[Store] = namespace["DictStore"]
    return store_class


DictStore = _example_store()


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[Store]:
    async with DictStore(clock=clock) as opened:
        yield opened


# Each shared test that takes `store` (and no other store fixture), under its own name.
for _module in SHARED:
    for _name, _test in inspect.getmembers(_module, inspect.isfunction):
        _params = inspect.signature(_test).parameters
        if (
            _name.startswith("test_")
            and "store" in _params
            and not {"any_store", "redis_store"} & set(_params)
        ):
            globals()[f"{_name}__{_module.__name__.rpartition('.')[2]}"] = _test


def test_the_shared_suite_ran_here() -> None:
    assert sum(name.startswith("test_") and "__test_" in name for name in globals()) >= 20
