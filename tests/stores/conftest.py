"""Fixtures for the store-specific tests: ``redis_store``, RedisStore on each topology.

The store matrix it draws from, the clock and the servers are the root ``conftest.py``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asgi_sessions import Store
from tests.clock import FakeClock
from tests.conftest import REDIS_STORES, make_store


@pytest.fixture(params=REDIS_STORES)
async def redis_store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Store]:
    """RedisStore on each topology: one server, a Redis Cluster, behind Sentinel."""
    async with await make_store(request.param, request, clock) as opened:
        yield opened
