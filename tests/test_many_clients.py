"""Many sessions at once through a real uvicorn: 200 clients, 0 errors, 0 lost writes.

The same run as ``python -m bench.many_clients`` (10 s there), shortened to 3 s here.
"""

from __future__ import annotations

import pytest

from bench.many_clients import run


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_hundred_concurrent_clients_get_no_error_and_lose_no_write(
    store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    if store == "redis":
        monkeypatch.setenv("REDIS_URL", request.getfixturevalue("redis_url"))
    result = run(store, clients=200, seconds=3)
    assert result.errors == []
    assert result.lost_writes == 0
    assert result.requests > 200  # every client got past its login and counted
