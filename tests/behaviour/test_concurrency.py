"""Concurrent requests on one session (security.md 2.13): no lost updates, delete wins.

Barriers inside the handlers make every request load the session before any of them
saves, the interleaving that loses updates in stores that write the whole record.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asgi_sessions import Store
from tests.support import StoreSpy, app_with, client_for, cookie_value

TRIALS = 50


class Trial:
    """Handlers whose requests meet at a barrier after loading the session."""

    def __init__(self, writers: int) -> None:
        self.barrier = asyncio.Barrier(writers)

    async def create(self, session: Any, request: Any) -> dict[str, Any]:
        session["base"] = 0
        return {"ok": True}

    async def write(self, session: Any, request: Any) -> dict[str, Any]:
        name = request.query_params["k"]
        await self.barrier.wait()  # everybody has loaded the same old record
        session[name] = name
        return {"ok": True}

    async def peek(self, session: Any, request: Any) -> dict[str, Any]:
        return {"data": session.copy(), "key": session.session_key}


@pytest.mark.parametrize("writers", [2, 10])
async def test_concurrent_requests_that_change_different_keys_lose_none_of_them(
    store: Store, writers: int
) -> None:
    trial = Trial(writers)
    app = app_with(store, {"create": trial.create, "write": trial.write, "peek": trial.peek})
    lost = 0
    async with client_for(app) as client:
        for _ in range(TRIALS):
            trial.barrier = asyncio.Barrier(writers)
            created = await client.post("/create", headers={"cookie": ""})
            cookie = {"cookie": f"session={cookie_value(created)}"}
            names = [f"k{i}" for i in range(writers)]
            responses = await asyncio.gather(
                *(client.post("/write", params={"k": name}, headers=cookie) for name in names)
            )
            assert [r.status_code for r in responses] == [200] * writers
            peek = (await client.get("/peek", headers=cookie)).json()
            record = await store.get(peek["key"])
            assert record is not None
            stored = record.get_decoded()
            lost += sum(1 for name in names if stored.get(name) != name)
            assert stored["base"] == 0
    assert lost == 0


async def test_a_logout_racing_a_write_is_never_undone(store: Store) -> None:
    loaded = asyncio.Event()
    logged_out = asyncio.Event()

    async def slow_write(session: Any, request: Any) -> dict[str, Any]:
        loaded.set()
        await logged_out.wait()
        session["late"] = True
        return {"ok": True}

    async def logout(session: Any, request: Any) -> dict[str, Any]:
        await session.flush()
        return {"ok": True}

    async def login(session: Any, request: Any) -> dict[str, Any]:
        session["user"] = "alice"
        return {"ok": True}

    async def peek(session: Any, request: Any) -> dict[str, Any]:
        return {"key": session.session_key}

    app = app_with(
        store, {"login": login, "slow_write": slow_write, "logout": logout, "peek": peek}
    )
    spy = StoreSpy(store)
    async with client_for(app) as client:
        for _ in range(TRIALS):
            loaded.clear()
            logged_out.clear()
            created = await client.post("/login", headers={"cookie": ""})
            cookie = {"cookie": f"session={cookie_value(created)}"}
            key = (await client.get("/peek", headers=cookie)).json()["key"]
            writer = asyncio.create_task(client.post("/slow_write", headers=cookie))
            await loaded.wait()
            bye = await client.post("/logout", headers=cookie)
            assert bye.status_code == 200
            assert "Max-Age=0" in bye.headers["set-cookie"]
            spy.calls.clear()
            logged_out.set()
            late = await writer
            assert late.status_code == 400
            assert "set-cookie" not in late.headers
            assert spy.calls["save"] == 1  # it tried, and the store refused
            assert await store.get(key) is None
            after = (await client.get("/peek", headers=cookie)).json()
            assert after == {"key": None}


async def test_a_logout_and_writes_started_together_never_resurrect_the_session(
    store: Store,
) -> None:
    barrier = asyncio.Barrier(3)

    async def login(session: Any, request: Any) -> dict[str, Any]:
        session["user"] = "alice"
        return {"ok": True}

    async def write(session: Any, request: Any) -> dict[str, Any]:
        await barrier.wait()
        session[request.query_params["k"]] = 1
        return {"ok": True}

    async def logout(session: Any, request: Any) -> dict[str, Any]:
        await barrier.wait()
        await session.flush()
        return {"ok": True}

    async def peek(session: Any, request: Any) -> dict[str, Any]:
        return {"key": session.session_key}

    app = app_with(store, {"login": login, "write": write, "logout": logout, "peek": peek})
    async with client_for(app) as client:
        for _ in range(TRIALS):
            barrier = asyncio.Barrier(3)
            created = await client.post("/login", headers={"cookie": ""})
            cookie = {"cookie": f"session={cookie_value(created)}"}
            key = (await client.get("/peek", headers=cookie)).json()["key"]
            responses = await asyncio.gather(
                client.post("/write", params={"k": "a"}, headers=cookie),
                client.post("/logout", headers=cookie),
                client.post("/write", params={"k": "b"}, headers=cookie),
            )
            assert {r.status_code for r in responses} <= {200, 400}
            assert responses[1].status_code == 200
            assert await store.get(key) is None
