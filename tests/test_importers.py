"""Switching without signing anyone out: sessions of Starlette's SessionMiddleware and of
starsessions (RedisStore) are taken over on first sight, once.

The old cookies come from the real libraries: each test first runs the old middleware,
as the app ran before the switch, and keeps the cookie it set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starsessions import SessionAutoloadMiddleware
from starsessions import SessionMiddleware as StarsessionsMiddleware
from starsessions.stores.redis import RedisStore as StarsessionsRedisStore

from asgi_sessions import FromStarlette, FromStarsessions, SessionMiddleware, Store
from tests.support import SECRET, client_for

OLD_SECRET = "the-secret-the-old-app-signed-with"


@pytest.fixture
def store(any_store: Store) -> Store:
    return any_store


def old_view(request: Request) -> JSONResponse:
    """The app before the switch: a sync view on request.session, as both libraries allow."""
    for name, value in request.query_params.items():
        request.session[name] = value
    return JSONResponse(dict(request.session))


async def new_view(request: Request) -> JSONResponse:
    session = await request.state.session
    if request.query_params.get("logout"):
        await session.flush()
    return JSONResponse({"data": session.copy(), "key": session.session_key})


def new_app(store: Store, *importers: Any, **options: Any) -> Starlette:
    return Starlette(
        routes=[Route("/", new_view)],
        middleware=[
            Middleware(
                SessionMiddleware, secret_key=SECRET, store=store, import_from=importers, **options
            )
        ],
    )


async def starlette_cookie(data: dict[str, str], **options: Any) -> str:
    """A cookie set by Starlette's own SessionMiddleware holding ``data``."""
    app = Starlette(
        routes=[Route("/", old_view)],
        middleware=[Middleware(StarletteSessionMiddleware, secret_key=OLD_SECRET, **options)],
    )
    async with client_for(app) as client:
        response = await client.get("/", params=data)
    value = response.cookies[options.get("session_cookie", "session")]
    assert value
    return value


def cookie_header(name: str, value: str) -> dict[str, str]:
    return {"cookie": f"{name}={value}"}


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


# -- from Starlette -------------------------------------------------------------------


async def test_a_starlette_session_moves_into_the_store_under_a_new_key(store: Store) -> None:
    old = await starlette_cookie({"user": "alice", "theme": "dark"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        assert first.json()["data"] == {"user": "alice", "theme": "dark"}
        (ours,) = set_cookies(first)  # same cookie name: ours replaces the old one
        assert ours.startswith("session=") and old not in ours
        new_value = ours.split(";")[0].split("=", 1)[1]
        again = await client.get("/", headers=cookie_header("session", new_value))
        assert again.json()["data"] == {"user": "alice", "theme": "dark"}
        assert "set-cookie" not in again.headers


async def test_an_old_cookie_under_another_name_is_deleted_when_taken_over(store: Store) -> None:
    old = await starlette_cookie({"user": "alice"}, session_cookie="legacy")
    importer = FromStarlette(OLD_SECRET, session_cookie="legacy")
    async with client_for(new_app(store, importer)) as client:
        response = await client.get("/", headers=cookie_header("legacy", old))
        assert response.json()["data"] == {"user": "alice"}
        cookies = set_cookies(response)
        assert any(c.startswith("session=") for c in cookies)
        assert any(c.startswith('legacy=""') and "Max-Age=0" in c for c in cookies)


@pytest.mark.parametrize("problem", ["tampered", "other secret", "expired"])
async def test_an_invalid_starlette_cookie_imports_nothing(store: Store, problem: str) -> None:
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


async def test_a_starlette_session_is_never_imported_again_after_logout(store: Store) -> None:
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore: nothing server-side can remember that it was imported")
    old = await starlette_cookie({"user": "alice"})
    async with client_for(new_app(store, FromStarlette(OLD_SECRET))) as client:
        first = await client.get("/", headers=cookie_header("session", old))
        new_value = set_cookies(first)[0].split(";")[0].split("=", 1)[1]
        await client.get("/", params={"logout": "1"}, headers=cookie_header("session", new_value))
        replay = await client.get("/", headers=cookie_header("session", old))
        assert replay.json() == {"data": {}, "key": None}


async def test_concurrent_first_requests_end_with_the_same_new_session(store: Store) -> None:
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
    store: Store, old_redis: redis.asyncio.Redis
) -> None:
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
    store: Store, old_redis: redis.asyncio.Redis
) -> None:
    planted = "0123456789abcdef0123456789abcdef"
    async with client_for(new_app(store, FromStarsessions(old_redis))) as client:
        response = await client.get("/", headers=cookie_header("session", planted))
        assert response.json() == {"data": {}, "key": None}
        assert "set-cookie" not in response.headers


async def test_a_starsessions_session_raced_by_concurrent_requests_is_imported_once(
    store: Store, old_redis: redis.asyncio.Redis
) -> None:
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
