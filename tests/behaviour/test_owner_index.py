"""Log out everywhere: sessions bound to an owner, listed and revoked, on every server store."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from asgi_sessions import Session, Store, StoreCapabilityError
from asgi_sessions.stores.cookie import CookieStore
from tests.clock import FakeClock
from tests.support import app_with, client_for, cookie_value, headers_with, make_config, sent


async def login(session: Session, request: Request) -> Any:
    await session.cycle_key()
    session["user"] = request.query_params["user"]
    session.owner = request.query_params["user"]
    await session.save()  # a new session has no key, so no public id, until first saved
    return {"public_id": session.public_id}


async def whoami(session: Session, request: Request) -> Any:
    return {"user": session.get("user"), "public_id": session.public_id}


async def log_in(store: Store, user: str, **options: Any) -> tuple[str, str]:
    """Log ``user`` in from a new browser; return (cookie, public id)."""
    async with client_for(app_with(store, {"login": login}, **options)) as client:
        response = await client.get("/login", params={"user": user})
        return cookie_value(response), response.json()["public_id"]


async def who(store: Store, cookie: str) -> Any:
    async with client_for(app_with(store, {"whoami": whoami})) as client:
        return (await client.get("/whoami", headers=sent(cookie))).json()


async def test_an_owners_sessions_are_listed_oldest_first(store: Store, clock: FakeClock) -> None:
    _, first = await log_in(store, "alice")
    clock.advance(5)
    _, second = await log_in(store, "alice")
    await log_in(store, "bob")
    listed = await store.list_sessions("alice")
    assert [row.public_id for row in listed] == [first, second]
    assert listed[0].created < listed[1].created
    assert all(row.expire_date > row.last_saved for row in listed)
    assert await store.list_sessions("nobody") == []


async def test_a_public_id_never_reveals_the_key(store: Store) -> None:
    cookie, public_id = await log_in(store, "alice")
    key = cookie.rpartition(".")[0]
    assert public_id not in key and key not in public_id
    assert len(public_id) >= 16


async def test_a_revoked_sessions_cookie_loads_empty(store: Store) -> None:
    cookie, public_id = await log_in(store, "alice")
    other_cookie, _ = await log_in(store, "alice")
    assert (await who(store, cookie))["user"] == "alice"
    assert await store.revoke("alice", public_id) == 1
    assert await store.revoke("alice", public_id) == 0
    assert (await who(store, cookie))["user"] is None
    assert (await who(store, other_cookie))["user"] == "alice"


async def test_revoking_needs_the_right_owner(store: Store) -> None:
    cookie, public_id = await log_in(store, "alice")
    assert await store.revoke("mallory", public_id) == 0
    assert (await who(store, cookie))["user"] == "alice"


async def test_revoke_all_keeping_the_current_one_leaves_exactly_that_one(store: Store) -> None:
    logins = [await log_in(store, "alice") for _ in range(3)]
    bob_cookie, _ = await log_in(store, "bob")
    current_cookie, current_id = logins[1]
    assert await store.revoke_all("alice", keep=current_id) == 2
    assert [row.public_id for row in await store.list_sessions("alice")] == [current_id]
    assert (await who(store, current_cookie))["user"] == "alice"
    for cookie, _ in (logins[0], logins[2]):
        assert (await who(store, cookie))["user"] is None
    assert (await who(store, bob_cookie))["user"] == "bob"
    assert await store.revoke_all("alice") == 1
    assert await store.list_sessions("alice") == []


async def test_expired_sessions_drop_out_of_the_index(store: Store, clock: FakeClock) -> None:
    await log_in(store, "alice", max_age=10)
    clock.advance(5)
    _, live = await log_in(store, "alice", max_age=10)
    clock.advance(6)
    assert [row.public_id for row in await store.list_sessions("alice")] == [live]
    assert await store.revoke_all("alice") == 1


async def test_cycle_key_keeps_the_owner_and_flush_forgets_it(store: Store) -> None:
    cookie, old_id = await log_in(store, "alice")
    config = make_config(store)
    session = await Session(config, headers_with(cookie))
    assert session.owner == "alice"
    await session.cycle_key()
    assert session.owner == "alice"
    assert [row.public_id for row in await store.list_sessions("alice")] == [session.public_id]
    assert session.public_id != old_id
    await session.flush()
    assert session.owner is None
    assert await store.list_sessions("alice") == []


async def test_changing_the_owner_moves_the_session_between_indexes(store: Store) -> None:
    cookie, _ = await log_in(store, "alice")
    session = await Session(make_config(store), headers_with(cookie))
    session.owner = "bob"
    assert session.modified
    await session.save()
    assert await store.list_sessions("alice") == []
    assert [row.public_id for row in await store.list_sessions("bob")] == [session.public_id]
    session.owner = None
    await session.save()
    assert await store.list_sessions("bob") == []


async def test_owner_must_be_a_string(store: Store) -> None:
    session = await Session(make_config(store))
    with pytest.raises(TypeError, match="owner must be a str"):
        session.owner = 42  # type: ignore[assignment]


async def test_the_cookie_store_says_it_cannot_list_or_revoke() -> None:
    store = CookieStore()
    for call in (
        store.list_sessions("alice"),
        store.revoke("alice", "x"),
        store.revoke_all("alice", keep="x"),
    ):
        with pytest.raises(StoreCapabilityError, match="cannot list or revoke"):
            await call
