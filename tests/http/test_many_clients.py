"""Many sessions at once through a real uvicorn: 200 clients, 0 errors, 0 lost writes.

The same run as ``python -m bench many-clients`` (10 s there), shortened to 3 s here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.suites.many_clients import serve_and_drive


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_two_hundred_concurrent_clients_get_no_error_and_lose_no_write(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if store == "redis":
        url = request.getfixturevalue("redis_url")
    else:
        url = f"sqlite:///{tmp_path / 'many.sqlite3'}"
    result = serve_and_drive(url, clients=200, seconds=3)
    assert result.errors == []
    assert result.lost_writes == 0
    # Every client got past its login and counted (how often depends on the machine's load).
    assert result.clients_counted == 200
