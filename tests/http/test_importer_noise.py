"""Importers stay quiet and tidy (issue 25): a cookie an importer recognises is not
logged as a bad signature, and an old cookie under another name that imported nothing is
removed from the browser."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from asgi_sessions import FromStarlette, MemoryStore, SQLiteStore, Store
from tests.support import (
    OLD_SECRET,
    client_for,
    cookie_header,
    new_app,
    set_cookies,
    starlette_cookie,
)

BAD_SIGNATURE = "bad signature"


async def test_a_successful_import_logs_no_bad_signature(caplog: pytest.LogCaptureFixture) -> None:
    old = await starlette_cookie({"user": "alice"})  # under our cookie's name, "session"
    async with client_for(new_app(MemoryStore(), FromStarlette(OLD_SECRET))) as client:
        with caplog.at_level(logging.WARNING, logger="asgi_sessions"):
            response = await client.get("/", headers=cookie_header("session", old))
    assert response.json()["data"] == {"user": "alice"}
    assert BAD_SIGNATURE not in caplog.text


async def test_a_cookie_nobody_signed_is_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with client_for(new_app(MemoryStore(), FromStarlette(OLD_SECRET))) as client:
        with caplog.at_level(logging.WARNING, logger="asgi_sessions"):
            await client.get("/", headers=cookie_header("session", "forged.value"))
    assert BAD_SIGNATURE in caplog.text


@pytest.mark.parametrize("flushes", [False, True])
async def test_a_refused_old_cookie_under_another_name_is_deleted(flushes: bool) -> None:
    old = await starlette_cookie({"user": "alice"}, session_cookie="legacy")
    # Every cookie is too old for this importer: the import is refused.
    importer = FromStarlette(OLD_SECRET, session_cookie="legacy", max_age=-1)
    async with client_for(new_app(MemoryStore(), importer)) as client:
        headers = cookie_header("legacy", old)
        response = await client.get("/", params={"logout": "1"} if flushes else {}, headers=headers)
    assert response.json() == {"data": {}, "key": None}
    cookies = set_cookies(response)
    assert any(c.startswith('legacy=""') and "Max-Age=0" in c for c in cookies), cookies
    assert response.headers["cache-control"] == "private"


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_stats_counts_an_imported_session_once_and_its_marker_apart(
    kind: str, tmp_path: Path
) -> None:
    store: Store = MemoryStore() if kind == "memory" else SQLiteStore(tmp_path / "s.sqlite3")
    old = await starlette_cookie({"user": "alice"})
    async with store, client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        response = await client.get("/", headers=cookie_header("session", old))
        assert response.json()["data"] == {"user": "alice"}
        stats = await store.stats()
    assert (stats.sessions, stats.markers) == (1, 1)
