"""The shared behaviour suite, for a store written outside this project (docs/stores.md).

Run from a checkout or an unpacked sdist of asgi-server-sessions (``tests/`` is not in the
wheel), with your store importable and a module of yours that defines a ``session_store``
fixture::

    python -m pytest tests/behaviour/store_suite.py -p my_store_fixture

Every test of the shared modules below that takes the ``store`` fixture (and no other store
fixture) runs here, the functions themselves, not copies, with ``store`` taken from your
``session_store``. The name does not match ``test_*.py``, so the project's own runs skip
this file; ``tests/stores/test_custom_store.py`` runs the same collection against the
guide's example store, and runs the command above in a subprocess.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from asgi_sessions import Store
from tests.behaviour import test_session_api, test_stores, test_write_policy

__all__ = ["SHARED", "shared_tests", "store"]

#: The modules whose store-level tests make up the suite.
SHARED = (test_stores, test_session_api, test_write_policy)

_OTHER_STORES = {"any_store", "redis_store"}


def shared_tests() -> dict[str, Callable[..., Any]]:
    """Each shared test that takes ``store``, as ``<test name>__<module name>``."""
    tests: dict[str, Callable[..., Any]] = {}
    for module in SHARED:
        for name, test in inspect.getmembers(module, inspect.isfunction):
            params = set(inspect.signature(test).parameters)
            if name.startswith("test_") and "store" in params and not _OTHER_STORES & params:
                tests[f"{name}__{module.__name__.rpartition('.')[2]}"] = test
    return tests


@pytest.fixture
def store(request: pytest.FixtureRequest) -> Store:
    """The store under test: the ``session_store`` fixture of the plugin given with ``-p``."""
    try:
        chosen: Store = request.getfixturevalue("session_store")
    except pytest.FixtureLookupError:
        pytest.fail(
            "No session_store fixture: define one that yields your store, built with "
            "clock=clock (the tests move time), in a module passed with "
            "`-p my_store_fixture` (see docs/stores.md).",
            pytrace=False,
        )
    return chosen


globals().update(shared_tests())
