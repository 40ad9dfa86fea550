"""Switching without signing anyone out: sessions of Starlette's SessionMiddleware and of
starsessions (RedisStore) are taken over on first sight, once.

The old cookies come from the real libraries: each test first runs the old middleware,
as the app ran before the switch, and keeps the cookie it set.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarsessionsMiddleware
from starsessions.stores.redis import RedisStore as StarsessionsRedisStore

from asgi_sessions import FromStarlette, FromStarsessions, SessionMiddleware, Store
from asgi_sessions.errors import SessionStoreError
from asgi_sessions.importers import IMPORT_WINDOW
from tests.clock import FakeClock
from tests.support import (
    OLD_SECRET,
    SECRET,
    client_for,
    cookie_header,
    new_app,
    new_view,
    old_view,
    set_cookies,
    starlette_cookie,
)

# -- from Starlette -------------------------------------------------------------------


async def test_a_starlette_session_moves_into_the_store_under_a_new_key(any_store: Store) -> None:
    store = any_store
    old = await starlette_cookie({"user": "alice", "theme": "dark"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        assert first.json()["data"] == {"user": "alice", "theme": "dark"}
        (ours,) = set_cookies(first)  # same cookie name: ours replaces the old one
        assert ours.startswith("session=") and old not in ours
        new_value = ours.split(";")[0].split("=", 1)[1]
        again = await client.get("/", headers=cookie_header("session", new_value))
        assert again.json()["data"] == {"user": "alice", "theme": "dark"}
        if not store.keeps_data_in_cookie:
            # The derived key serves one request: the session moves to a random key.
            (moved,) = set_cookies(again)
            assert moved.startswith("session=") and new_value not in moved
            moved_value = our_cookie(again)
            last = await client.get("/", headers=cookie_header("session", moved_value))
            assert last.json()["data"] == {"user": "alice", "theme": "dark"}
            assert "set-cookie" not in last.headers
        else:
            assert "set-cookie" not in again.headers


async def test_an_old_cookie_under_another_name_is_deleted_when_taken_over(
    any_store: Store,
) -> None:
    store = any_store
    old = await starlette_cookie({"user": "alice"}, session_cookie="legacy")
    importer = FromStarlette(OLD_SECRET, session_cookie="legacy")
    async with client_for(new_app(store, importer)) as client:
        response = await client.get("/", headers=cookie_header("legacy", old))
        assert response.json()["data"] == {"user": "alice"}
        cookies = set_cookies(response)
        assert any(c.startswith("session=") for c in cookies)
        assert any(c.startswith('legacy=""') and "Max-Age=0" in c for c in cookies)


@pytest.mark.parametrize("problem", ["tampered", "other secret", "expired"])
async def test_an_invalid_starlette_cookie_imports_nothing(any_store: Store, problem: str) -> None:
    store = any_store
    old = await starlette_cookie({"user": "alice"}, max_age=100)
    importer = FromStarlette(OLD_SECRET, max_age=100)
    if problem == "tampered":
        old = old[:-2] + ("AA" if old[-2:] != "AA" else "BB")
    elif problem == "other secret":
        importer = FromStarlette("not-the-old-secret", max_age=100)
    else:
        importer = FromStarlette(OLD_SECRET, max_age=-1)  # every cookie is too old
    async with client_for(new_app(store, importer)) as client:
        response = await client.get("/", headers=cookie_header("session", old))
        assert response.json() == {"data": {}, "key": None}
        assert "set-cookie" not in response.headers


async def test_a_starlette_session_is_never_imported_again_after_logout(any_store: Store) -> None:
    store = any_store
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore: nothing server-side can remember that it was imported")
    old = await starlette_cookie({"user": "alice"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        new_value = set_cookies(first)[0].split(";")[0].split("=", 1)[1]
        await client.get("/", params={"logout": "1"}, headers=cookie_header("session", new_value))
        replay = await client.get("/", headers=cookie_header("session", old))
        assert replay.json() == {"data": {}, "key": None}


async def test_concurrent_first_requests_end_with_the_same_new_session(any_store: Store) -> None:
    store = any_store
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore: each response carries its own copy; nothing to share")
    old = await starlette_cookie({"user": "alice"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        answers = await asyncio.gather(
            *(client.get("/", headers=cookie_header("session", old)) for _ in range(5))
        )
    keys = {answer.json()["key"] for answer in answers} - {None}
    assert len(keys) == 1  # never two imported sessions
    for answer in answers:  # the winner and those that found its session, or a clean loss
        assert answer.json()["data"] in ({"user": "alice"}, {})


# -- from starsessions ----------------------------------------------------------------


@pytest.fixture
async def old_redis(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def starsessions_cookie(client: redis.asyncio.Redis, data: dict[str, str]) -> str:
    """A cookie set by starsessions' own middleware, its session held in Redis."""
    app = Starlette(
        routes=[Route("/", old_view)],
        middleware=[
            Middleware(
                StarsessionsMiddleware,
                store=StarsessionsRedisStore(connection=client),
                cookie_https_only=False,
                lifetime=3600,
            ),
            Middleware(SessionAutoloadMiddleware),
        ],
    )
    async with client_for(app) as http:
        response = await http.get("/", params=data)
    return response.cookies["session"]


async def test_a_starsessions_session_moves_over_and_its_old_record_goes(
    any_store: Store, old_redis: redis.asyncio.Redis
) -> None:
    store = any_store
    old = await starsessions_cookie(old_redis, {"user": "alice", "cart": "3"})
    assert await old_redis.exists("starsessions." + old)
    async with client_for(new_app(store, FromStarsessions(old_redis))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        assert first.json()["data"] == {"user": "alice", "cart": "3"}
        assert first.json()["key"] != old
        assert not await old_redis.exists("starsessions." + old)
        new_value = set_cookies(first)[0].split(";")[0].split("=", 1)[1]
        again = await client.get("/", headers=cookie_header("session", new_value))
        assert again.json()["data"] == {"user": "alice", "cart": "3"}


async def test_an_id_the_old_store_does_not_hold_is_never_adopted(
    any_store: Store, old_redis: redis.asyncio.Redis
) -> None:
    store = any_store
    planted = "0123456789abcdef0123456789abcdef"
    async with client_for(new_app(store, FromStarsessions(old_redis))) as client:
        response = await client.get("/", headers=cookie_header("session", planted))
        assert response.json() == {"data": {}, "key": None}
        assert "set-cookie" not in response.headers


async def test_a_starsessions_session_raced_by_concurrent_requests_is_imported_once(
    any_store: Store, old_redis: redis.asyncio.Redis
) -> None:
    store = any_store
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore: each response carries its own copy; nothing to share")
    old = await starsessions_cookie(old_redis, {"user": "alice"})
    async with client_for(new_app(store, FromStarsessions(old_redis))) as client:
        answers = await asyncio.gather(
            *(client.get("/", headers=cookie_header("session", old)) for _ in range(5))
        )
    keys = {answer.json()["key"] for answer in answers} - {None}
    assert len(keys) == 1
    assert sum(answer.json()["data"] == {"user": "alice"} for answer in answers) >= 1


# -- review defects (round three): one regression test each ----------------------------


def our_cookie(response: httpx.Response) -> str:
    """The value of our session cookie the response sets."""
    (value,) = [
        c.split(";")[0].split("=", 1)[1] for c in set_cookies(response) if c.startswith("session=")
    ]
    return value


def fail_once(store: Store, method: str, call: int) -> list[int]:
    """Make the ``call``-th call of ``store.<method>`` raise SessionStoreError, once (a
    transient outage at exactly that step); returns the call counter."""
    original = getattr(store, method)
    calls = [0]

    async def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise SessionStoreError("injected: the store is briefly unavailable")
        return await original(*args, **kwargs)

    setattr(store, method, failing)
    return calls


async def login_view(request: Request) -> JSONResponse:
    session = await request.state.session
    for name, value in request.query_params.items():
        session[name] = value
    return JSONResponse({"data": session.copy(), "key": session.session_key})


def login_app(store: Store, *importers: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", new_view), Route("/set", login_view)],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, store=store, import_from=importers)
        ],
    )


# Defect 2: the old cookie kept opening the live session (a fixation path).


async def test_a_copy_of_the_old_cookie_cannot_open_the_session_after_a_later_write(
    store: Store,
) -> None:
    old = await starlette_cookie({"cart": "1"})  # anonymous, before login
    async with client_for(login_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        assert first.json()["data"] == {"cart": "1"}
        login = await client.get(
            "/set", params={"user": "alice"}, headers=cookie_header("session", our_cookie(first))
        )
        assert login.json()["data"] == {"cart": "1", "user": "alice"}
        copy = await client.get("/", headers=cookie_header("session", old))
        assert copy.json() == {"data": {}, "key": None}
        assert any(c.startswith("session=") and "Max-Age=0" in c for c in set_cookies(copy))
        mine = await client.get("/", headers=cookie_header("session", our_cookie(login)))
        assert mine.json()["data"] == {"cart": "1", "user": "alice"}


async def test_a_copy_of_the_old_cookie_is_dead_once_the_new_cookie_was_used(
    store: Store,
) -> None:
    old = await starlette_cookie({"cart": "1"})
    async with client_for(login_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        # The next request, read-only, retires the derived key.
        used = await client.get("/", headers=cookie_header("session", our_cookie(first)))
        assert used.json()["data"] == {"cart": "1"}
        assert our_cookie(used) != our_cookie(first)
        copy = await client.get("/", headers=cookie_header("session", old))
        assert copy.json() == {"data": {}, "key": None}
        dead = await client.get("/", headers=cookie_header("session", our_cookie(first)))
        assert dead.json() == {"data": {}, "key": None}
        moved = await client.get("/", headers=cookie_header("session", our_cookie(used)))
        assert moved.json()["data"] == {"cart": "1"}


async def test_a_copy_of_the_old_cookie_reaches_nothing_after_the_import_window(
    store: Store, clock: FakeClock
) -> None:
    old = await starlette_cookie({"cart": "1"})
    async with client_for(login_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        inside = await client.get("/", headers=cookie_header("session", old))
        assert inside.json()["key"] == first.json()["key"]  # a concurrent first request
        clock.advance(IMPORT_WINDOW)
        late = await client.get("/", headers=cookie_header("session", old))
        assert late.json() == {"data": {}, "key": None}
        assert any(c.startswith("session=") and "Max-Age=0" in c for c in set_cookies(late))


# Defect 3: with max_age=None the marker died after 14 days, the cookie never did.


async def test_a_starlette_cookie_without_max_age_never_imports_again_after_logout(
    store: Store, clock: FakeClock
) -> None:
    old = await starlette_cookie({"user": "alice"}, max_age=None)
    # Starlette signed it by the real clock: the fake one must not lag behind it (a
    # signature from the future is refused).
    clock.now = max(clock.now, float(int(time.time())))
    importer = FromStarlette(OLD_SECRET, max_age=None, clock=clock)
    async with client_for(new_app(store, importer)) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        assert first.json()["data"] == {"user": "alice"}
        await client.get(
            "/", params={"logout": "1"}, headers=cookie_header("session", our_cookie(first))
        )
        for days in (1, 12, 1, 1, 300):  # to 13, 14, 15 days, then a year
            clock.advance(days * 24 * 3600)
            replay = await client.get("/", headers=cookie_header("session", old))
            assert replay.json() == {"data": {}, "key": None}, days


async def test_a_starlette_cookie_without_max_age_is_accepted_for_the_documented_bound(
    store: Store, clock: FakeClock
) -> None:
    old = await starlette_cookie({"user": "alice"}, max_age=None)
    # Starlette signed it by the real clock: the fake one must not lag behind it (a
    # signature from the future is refused).
    clock.now = max(clock.now, float(int(time.time())))
    importer = FromStarlette(OLD_SECRET, max_age=None, clock=clock)
    assert importer.accepts_for == 14 * 24 * 3600
    clock.advance(importer.accepts_for + 1)
    async with client_for(new_app(store, importer)) as client:
        response = await client.get("/", headers=cookie_header("session", old))
        assert response.json() == {"data": {}, "key": None}


# Defect 4: a transient store failure during an import lost the old session.


@pytest.mark.parametrize("step", ["session write", "marker write", "marker read"])
async def test_a_store_failure_during_an_import_keeps_the_old_session_for_the_retry(
    store: Store, step: str
) -> None:
    old = await starlette_cookie({"user": "alice"})
    method, call = {
        "session write": ("save", 1),
        "marker write": ("save", 2),
        "marker read": ("load", 1),
    }[step]
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        fail_once(store, method, call)
        failed = await client.get("/", headers=cookie_header("session", old))
        assert failed.status_code == 503
        assert "set-cookie" not in failed.headers  # the old cookie stays
        retry = await client.get("/", headers=cookie_header("session", old))
        assert retry.json()["data"] == {"user": "alice"}
        again = await client.get("/", headers=cookie_header("session", old))
        assert again.json()["key"] == retry.json()["key"]  # converged on one session


@pytest.mark.parametrize("step", ["session write", "marker write"])
async def test_a_store_failure_during_a_starsessions_import_keeps_the_old_record(
    store: Store, old_redis: redis.asyncio.Redis, step: str
) -> None:
    old = await starsessions_cookie(old_redis, {"user": "alice", "cart": "3"})
    async with client_for(new_app(store, FromStarsessions(old_redis))) as client:
        fail_once(store, "save", 1 if step == "session write" else 2)
        failed = await client.get("/", headers=cookie_header("session", old))
        assert failed.status_code == 503
        assert await old_redis.exists("starsessions." + old)  # not released
        retry = await client.get("/", headers=cookie_header("session", old))
        assert retry.json()["data"] == {"user": "alice", "cart": "3"}
        assert not await old_redis.exists("starsessions." + old)  # released once durable


# Defect 5: two concurrent first requests could end in different sessions.


async def test_a_request_landing_mid_import_ends_in_the_same_session(store: Store) -> None:
    old = await starlette_cookie({"user": "alice"})
    app = new_app(store, FromStarlette(OLD_SECRET))
    save = store.save
    second: list[httpx.Response] = []
    raced: list[bool] = []

    async def save_then_race(key: str, change: Any) -> Any:
        saved = await save(key, change)
        if not raced:  # right after the first request created the session, before its marker
            raced.append(True)
            async with client_for(app) as other:
                second.append(await other.get("/", headers=cookie_header("session", old)))
        return saved

    store.save = save_then_race  # type: ignore[method-assign]
    async with client_for(app) as client:
        first = await client.get("/", headers=cookie_header("session", old))
    (racer,) = second
    assert first.json()["data"] == racer.json()["data"] == {"user": "alice"}
    assert first.json()["key"] == racer.json()["key"] is not None
    assert our_cookie(first) == our_cookie(racer)


async def test_concurrent_first_requests_with_one_old_cookie_all_end_in_one_session(
    store: Store,
) -> None:
    old = await starlette_cookie({"user": "alice"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        answers = await asyncio.gather(
            *(client.get("/", headers=cookie_header("session", old)) for _ in range(5))
        )
    assert {answer.json()["key"] for answer in answers} == {answers[0].json()["key"]}
    assert all(answer.json()["data"] == {"user": "alice"} for answer in answers)


# Defect 6: the cookie store lost a starsessions session behind a 5xx first response.


async def test_a_5xx_first_response_leaves_the_starsessions_session_for_the_next_request(
    any_store: Store, old_redis: redis.asyncio.Redis
) -> None:
    old = await starsessions_cookie(old_redis, {"user": "alice"})

    async def broken(request: Request) -> JSONResponse:
        await request.state.session
        return JSONResponse({"error": "boom"}, status_code=500)

    app = Starlette(
        routes=[Route("/", new_view), Route("/broken", broken)],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=SECRET,
                store=any_store,
                import_from=[FromStarsessions(old_redis)],
            )
        ],
    )
    async with client_for(app) as client:
        failed = await client.get("/broken", headers=cookie_header("session", old))
        assert failed.status_code == 500 and "set-cookie" not in failed.headers
        retry = await client.get("/", headers=cookie_header("session", old))
        assert retry.json()["data"] == {"user": "alice"}
    assert not await old_redis.exists("starsessions." + old)
