"""A change of ``session.owner`` gives the session a new key (session-fixation defence).

Through real HTTP on every server store, and on the cookie store where it applies: the
data is kept, the old key is dead at once, the owner index shows only the new session,
one request rotates at most once, and ``rotate_on_owner_change=False`` keeps the key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from asgi_sessions import Session, Store
from asgi_sessions.stores.cookie import CookieStore
from tests.clock import FakeClock
from tests.support import StoreSpy, app_with, client_for, cookie_value, sent


class Gate:
    """Holds a request after it loaded its session, until the test releases it."""

    def __init__(self) -> None:
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()


def handlers(gate: Gate | None = None) -> dict[str, Any]:
    async def put(session: Session, request: Request) -> Any:
        session.update(request.query_params)
        return {}

    async def login(session: Session, request: Request) -> Any:
        session.owner = request.query_params["user"]
        return {}

    async def login_cycling_first(session: Session, request: Request) -> Any:
        await session.cycle_key()
        session.owner = request.query_params["user"]
        return {}

    async def login_cycling_last(session: Session, request: Request) -> Any:
        session.owner = request.query_params["user"]
        await session.cycle_key()
        return {}

    async def read(session: Session, request: Request) -> Any:
        return {
            "data": session.copy(),
            "key": session.session_key,
            "owner": session.owner,
            "public_id": session.public_id,
        }

    async def slow_put(session: Session, request: Request) -> Any:
        assert gate is not None
        gate.loaded.set()
        await gate.release.wait()
        session.update(request.query_params)
        return {}

    return {
        "put": put,
        "login": login,
        "login-cycling-first": login_cycling_first,
        "login-cycling-last": login_cycling_last,
        "read": read,
        "slow-put": slow_put,
    }


async def read(client: httpx.AsyncClient, cookie: str) -> Any:
    response = await client.get("/read", headers=sent(cookie))
    assert response.status_code == 200
    return response.json()


async def start(client: httpx.AsyncClient, **data: str) -> str:
    """A stored session holding ``data``, as its cookie value."""
    response = await client.get("/put", params=data)
    client.cookies.clear()  # each request below names its cookie itself
    return cookie_value(response)


async def log_in(client: httpx.AsyncClient, cookie: str, user: str, path: str = "/login") -> str:
    response = await client.get(path, params={"user": user}, headers=sent(cookie))
    client.cookies.clear()
    assert response.status_code == 200
    return cookie_value(response)


async def test_logging_in_rotates_the_key_keeps_the_data_and_kills_the_old_key(
    store: Store,
) -> None:
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers())) as client:
        old = await start(client, cart="apple")
        before = await read(client, old)
        assert before["owner"] is None

        new = await log_in(client, old, "alice")

        after = await read(client, new)
        assert after["data"] == {"cart": "apple"}
        assert after["owner"] == "alice"
        assert after["key"] != before["key"]
        assert spy.calls["rotate"] == 1
        # The old cookie names nothing any more: a fixed session is useless to an attacker.
        empty = {"data": {}, "key": None, "owner": None, "public_id": None}
        assert await read(client, old) == empty
        assert await store.get(before["key"]) is None
        listed = [row.public_id for row in await store.list_sessions("alice")]
        assert listed == [after["public_id"]]
        assert before["public_id"] != after["public_id"]


async def test_switching_from_one_owner_to_another_rotates_and_moves_the_index(
    store: Store,
) -> None:
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers())) as client:
        alices = await log_in(client, await start(client, cart="apple"), "alice")
        alice = await read(client, alices)

        bobs = await log_in(client, alices, "bob")

        bob = await read(client, bobs)
        assert spy.calls["rotate"] == 2
        assert bob["key"] != alice["key"]
        assert bob["data"] == {"cart": "apple"}
        assert bob["owner"] == "bob"
        assert (await read(client, alices))["key"] is None
        assert await store.list_sessions("alice") == []
        assert [row.public_id for row in await store.list_sessions("bob")] == [bob["public_id"]]


@pytest.mark.parametrize("path", ["/login-cycling-first", "/login-cycling-last"])
async def test_cycle_key_and_an_owner_change_in_one_request_rotate_once(
    store: Store, path: str
) -> None:
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers())) as client:
        old = await start(client, cart="apple")
        old_key = (await read(client, old))["key"]

        new = await log_in(client, old, "alice", path)

        # A cluster store moves the session into its owner's slot when the owner changes;
        # a cycle_key() made before the owner was known already rotated inside the old one.
        twice = store.new_key_on_owner_change and path == "/login-cycling-first"
        assert spy.calls["rotate"] == (2 if twice else 1)
        after = await read(client, new)
        assert after["data"] == {"cart": "apple"}
        assert after["owner"] == "alice"
        assert await store.get(old_key) is None
        assert [row.public_id for row in await store.list_sessions("alice")] == [after["public_id"]]


async def test_with_rotation_off_an_owner_change_keeps_the_key(store: Store) -> None:
    spy = StoreSpy(store)
    app = app_with(store, handlers(), rotate_on_owner_change=False)
    async with client_for(app) as client:
        old = await start(client, cart="apple")
        before = await read(client, old)

        new = await log_in(client, old, "alice")

        if store.new_key_on_owner_change:
            # A cluster store still moves the session into its owner's slot, under a new
            # key: two slots cannot share one key (see RedisStore on a cluster).
            assert spy.calls["rotate"] == 1
            assert new != old
            assert (await read(client, old))["key"] is None
        else:
            assert spy.calls["rotate"] == 0
            assert new == old  # the same key, signed the same way
        after = await read(client, new)
        assert after["owner"] == "alice"
        assert after["data"] == {"cart": "apple"}
        listed = [row.public_id for row in await store.list_sessions("alice")]
        assert listed == [after["public_id"]]
        if not store.new_key_on_owner_change:
            assert listed == [before["public_id"]]


async def test_a_request_in_flight_on_the_old_key_answers_400_and_cannot_revive_it(
    store: Store,
) -> None:
    gate = Gate()
    async with client_for(app_with(store, handlers(gate))) as client:
        old = await start(client, cart="apple")
        old_key = (await read(client, old))["key"]
        stale = asyncio.create_task(
            client.get("/slow-put", params={"coupon": "stale"}, headers=sent(old))
        )
        await gate.loaded.wait()  # it loaded the session under the old key
        new = await log_in(client, old, "alice")
        gate.release.set()

        response = await stale
        assert response.status_code == 400  # delete wins, as after a logout
        assert "set-cookie" not in response.headers
        assert await store.get(old_key) is None
        assert (await read(client, new))["data"] == {"cart": "apple"}
        assert len(await store.list_sessions("alice")) == 1


async def test_a_request_after_the_rotation_on_the_old_cookie_starts_afresh(
    store: Store,
) -> None:
    async with client_for(app_with(store, handlers())) as client:
        old = await start(client, cart="apple")
        old_key = (await read(client, old))["key"]
        new = await log_in(client, old, "alice")

        # The old cookie loads empty; what it writes is a new session, never the old one.
        response = await client.get("/put", params={"coupon": "late"}, headers=sent(old))
        client.cookies.clear()
        late = await read(client, cookie_value(response))
        assert late["data"] == {"coupon": "late"}
        assert late["key"] not in (old_key, (await read(client, new))["key"])
        assert await store.get(old_key) is None
        assert (await read(client, new))["data"] == {"cart": "apple"}


# -- the cookie store: a new cookie, but the old one cannot be revoked -------------------


async def test_on_the_cookie_store_logging_in_issues_a_new_cookie_with_the_data(
    clock: FakeClock,
) -> None:
    store = CookieStore(clock=clock)
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers())) as client:
        old = await start(client, cart="apple")
        clock.advance(1)  # a new payload carries a new issue time
        new = await log_in(client, old, "alice")

        assert new != old
        assert spy.calls["rotate"] == 1
        after = await read(client, new)
        assert (after["data"], after["owner"]) == ({"cart": "apple"}, "alice")
        # Nothing server-side to delete: the old cookie stays valid until it expires.
        assert (await read(client, old))["data"] == {"cart": "apple"}


@pytest.mark.parametrize("path", ["/login-cycling-first", "/login-cycling-last"])
async def test_on_the_cookie_store_cycle_key_and_an_owner_change_rotate_once(path: str) -> None:
    store = CookieStore()
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers())) as client:
        new = await log_in(client, await start(client, cart="apple"), "alice", path)
        assert spy.calls["rotate"] == 1
        assert (await read(client, new))["owner"] == "alice"


async def test_on_the_cookie_store_rotation_off_saves_without_rotating() -> None:
    store = CookieStore()
    spy = StoreSpy(store)
    async with client_for(app_with(store, handlers(), rotate_on_owner_change=False)) as client:
        old = await start(client, cart="apple")
        saves = spy.calls["save"]
        new = await log_in(client, old, "alice")
        assert (spy.calls["rotate"], spy.calls["save"] - saves) == (0, 1)
        assert (await read(client, new))["owner"] == "alice"
