"""The middleware's configuration, cookie parsing, scopes and integrations."""

from __future__ import annotations

import base64
import hmac
import unittest.mock
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import asgi_sessions
from asgi_sessions import (
    ImproperlyConfigured,
    MemoryStore,
    Session,
    SessionMiddleware,
    SessionNotLoaded,
    Store,
    get_session,
    store_from_url,
)
from asgi_sessions.cookies import Signer, cookie_values
from tests.support import SECRET, app_with, client_for, cookie_value, run_websocket, sent


async def set_user(session: Session, request: Request) -> Any:
    session["user"] = request.query_params.get("name", "alice")
    return dict(session)


async def read_all(session: Session, request: Request) -> Any:
    return dict(session)


def test_public_names_are_exactly_these() -> None:
    assert sorted(asgi_sessions.__all__) == [
        "CookieStore",
        "FromStarlette",
        "FromStarsessions",
        "ImproperlyConfigured",
        "JSONSerializer",
        "MemoryStore",
        "MissingDependency",
        "OwnedSession",
        "PostgresStore",
        "RedisStore",
        "SQLiteStore",
        "Serializer",
        "Session",
        "SessionError",
        "SessionEvent",
        "SessionEvents",
        "SessionInterrupted",
        "SessionMiddleware",
        "SessionNotLoaded",
        "SessionRecord",
        "SessionStoreError",
        "SessionTooLarge",
        "Store",
        "StoreCapabilityError",
        "StoreStats",
        "get_session",
        "store_from_url",
    ]
    for name in asgi_sessions.__all__:
        assert getattr(asgi_sessions, name) is not None
    with pytest.raises(AttributeError):
        _ = asgi_sessions.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"session_cookie": "a;b"}, "not a valid cookie name"),
        ({"session_cookie": "has space"}, "not a valid cookie name"),
        ({"path": "/\r\n"}, "path"),
        ({"path": "relative"}, "path"),
        ({"domain": "x;Secure"}, "domain"),
        ({"same_site": "sometimes"}, "same_site"),
        ({"same_site": "none"}, "https_only=True"),
        ({"partitioned": True}, "https_only=True"),
        ({"session_cookie": "__Secure-id"}, "must be Secure"),
        ({"session_cookie": "__Host-id"}, "must be Secure"),
        ({"session_cookie": "__Host-id", "https_only": True, "path": "/app"}, "path='/'"),
        ({"session_cookie": "__Host-id", "https_only": True, "domain": "a.test"}, "no domain"),
        ({"secret_key": ""}, "secret_key"),
        ({"secret_key": []}, "secret_key"),
        ({"absolute_timeout": 0}, "absolute_timeout"),
        ({"store": "memory://"}, "store must be a Store"),
        ({"import_from": ["starlette"]}, "import_from takes importers"),
        ({"renew_interval": -1}, "renew_interval"),
    ],
)
def test_a_configuration_that_cannot_work_is_refused_at_start_up(
    options: dict[str, Any], message: str
) -> None:
    options = {"secret_key": SECRET, "store": MemoryStore(), **options}
    with pytest.raises(ImproperlyConfigured, match=message):
        SessionMiddleware(PlainTextResponse("x"), **options)


async def test_host_prefixed_cookie_gets_secure_and_root_path() -> None:
    app = app_with(MemoryStore(), {"set": set_user}, session_cookie="__Host-id", https_only=True)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        response = await client.get("/set")
        value = cookie_value(response, "__Host-id")
        assert response.headers["set-cookie"] == (
            f"__Host-id={value}; path=/; Max-Age=1209600; httponly; samesite=lax; secure"
        )


async def test_max_age_none_sends_a_browser_session_cookie() -> None:
    async with client_for(app_with(MemoryStore(), {"set": set_user}, max_age=None)) as client:
        header = (await client.get("/set")).headers["set-cookie"]
        assert "Max-Age" not in header and "expires" not in header


async def test_set_expiry_zero_sends_a_browser_session_cookie() -> None:
    async def browser(session: Session, request: Request) -> Any:
        session["a"] = 1
        session.set_expiry(0)
        return {}

    async with client_for(app_with(MemoryStore(), {"b": browser})) as client:
        header = (await client.get("/b")).headers["set-cookie"]
        assert "Max-Age" not in header


def test_the_cookie_parser_matches_names_exactly_and_keeps_order() -> None:
    header = (
        "\u00a0session=nbsp; \u2000session=enspace; =session=nameless; "
        "xsession=prefix; session = spaced ; session=first; session=second"
    ).encode()
    assert cookie_values([(b"cookie", header)], b"session") == ["spaced", "first", "second"]
    assert cookie_values([(b"cookie", b"other=1")], b"session") == []
    assert cookie_values([(b"host", b"session=1")], b"session") == []


async def test_among_duplicate_cookies_the_first_validly_signed_wins() -> None:
    store = MemoryStore()
    app = app_with(store, {"set": set_user, "read": read_all})
    async with client_for(app) as client:
        alice = cookie_value(await client.get("/set", params={"name": "alice"}))
        client.cookies.clear()
        mallory = cookie_value(await client.get("/set", params={"name": "mallory"}))
        client.cookies.clear()
        forged = "x" * 43 + "." + "y" * 43
        header = f"session={forged}; session={alice}; session={mallory}"
        assert (await client.get("/read", headers={"cookie": header})).json() == {"user": "alice"}
        shadow = f"\u00a0session={mallory}; session={alice}".encode()
        assert (await client.get("/read", headers={"cookie": shadow})).json() == {"user": "alice"}


def test_signatures_use_the_first_secret_and_verify_with_any() -> None:
    rotated = Signer(["new", "old"], salt="s")
    assert rotated.unsign(Signer(["old"], salt="s").sign("k")) == "k"
    assert Signer(["new"], salt="s").unsign(rotated.sign("k")) == "k"
    assert Signer(["old"], salt="s").unsign(rotated.sign("k")) is None
    assert Signer(["new"], salt="other").unsign(rotated.sign("k")) is None
    assert rotated.unsign("no-dot") is None
    assert rotated.unsign("a" * 5000) is None


def test_a_signature_is_hmac_sha256_of_the_derived_key_in_unpadded_base64url() -> None:
    # The cookie format outlives any release: cookies signed before an upgrade must still
    # verify after it, so the signature is pinned to its definition, computed here with
    # the standard library alone.
    derived = hmac.digest(SECRET.encode(), b"asgi_sessions.cookie", "sha256")
    signer = Signer([SECRET], salt="asgi_sessions.cookie")
    alphabet = set()
    for number in range(200):
        value = f"key-{number}"
        mac = base64.urlsafe_b64encode(hmac.digest(derived, value.encode(), "sha256"))
        assert signer.sign(value) == f"{value}.{mac.rstrip(b'=').decode()}"
        alphabet |= set(mac.decode())
    assert {"-", "_"} <= alphabet  # the two characters base64url changes were covered


async def test_accessing_the_session_before_awaiting_it_says_how() -> None:
    async def eager(request: Request) -> PlainTextResponse:
        return PlainTextResponse(str(request.state.session["user"]))

    app = Starlette(
        routes=[Route("/", eager)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())],
    )
    async with client_for(app) as client:
        with pytest.raises(SessionNotLoaded, match=r"await request\.state\.session"):
            await client.get("/")


async def test_autoload_lets_sync_code_read_request_session() -> None:
    def sync_view(request: Request) -> JSONResponse:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return JSONResponse(request.session)

    app = Starlette(
        routes=[Route("/", sync_view)],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore(), autoload=True)
        ],
    )
    async with client_for(app) as client:
        assert (await client.get("/")).json() == {"visits": 1}
        assert (await client.get("/")).json() == {"visits": 2}


async def test_autoload_on_listed_paths_only_keeps_the_rest_lazy() -> None:
    def sync_view(request: Request) -> JSONResponse:
        request.session["visits"] = request.session.get("visits", 0) + 1
        return JSONResponse(request.session)

    store = MemoryStore()
    loads: list[str] = []
    original = store.load

    async def counted(key: str) -> Any:
        loads.append(key)
        return await original(key)

    store.load = counted  # type: ignore[method-assign]
    app = Starlette(
        routes=[Route("/admin/home", sync_view), Route("/adminx", sync_view),
                Route("/public", lambda request: PlainTextResponse("hi"))],
        middleware=[
            Middleware(SessionMiddleware, secret_key=SECRET, store=store, autoload=["/admin"])
        ],
    )  # fmt: skip
    async with client_for(app, raise_app_exceptions=False) as client:
        assert (await client.get("/admin/home")).json() == {"visits": 1}
        assert (await client.get("/admin/home")).json() == {"visits": 2}
        before = len(loads)
        assert (await client.get("/public")).text == "hi"
        assert len(loads) == before  # not loaded where nobody asked for it
        # "/adminx" is not under "/admin": sync access there says how to load.
        assert (await client.get("/adminx")).status_code == 500


@pytest.mark.parametrize("autoload", ["/admin", ["admin"], [1]])
def test_autoload_paths_must_be_a_list_of_absolute_prefixes(autoload: Any) -> None:
    with pytest.raises(ImproperlyConfigured, match="path prefixes"):
        SessionMiddleware(None, secret_key=SECRET, store=MemoryStore(), autoload=autoload)  # type: ignore[arg-type]


async def test_fastapi_depends_get_session() -> None:
    from fastapi import Depends, FastAPI

    api = FastAPI()
    api.add_middleware(SessionMiddleware, secret_key=SECRET, store=MemoryStore())

    @api.get("/count")
    async def count(session: Session = Depends(get_session)) -> dict[str, int]:  # noqa: B008
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"]}

    async with client_for(api) as client:
        assert (await client.get("/count")).json() == {"n": 1}
        assert (await client.get("/count")).json() == {"n": 2}


async def test_get_session_without_the_middleware_says_what_to_add() -> None:
    async def view(request: Request) -> PlainTextResponse:
        await get_session(request)
        return PlainTextResponse("unreachable")

    async with client_for(Starlette(routes=[Route("/", view)])) as client:
        with pytest.raises(ImproperlyConfigured, match="add SessionMiddleware"):
            await client.get("/")


async def test_websocket_handlers_can_load_and_save(store: Store) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        session = await websocket.state.session
        session["from_ws"] = session.get("user", "nobody")
        await session.save()
        await websocket.send_json(dict(session))
        await websocket.close()

    app = app_with(store, {"set": set_user, "read": read_all})
    app.router.routes.append(WebSocketRoute("/ws", ws))
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/set"))
    messages = await run_websocket(app, "/ws", cookie)
    assert messages[1] == {"type": "websocket.send", "text": '{"user":"alice","from_ws":"alice"}'}
    async with client_for(app) as client:
        assert (await client.get("/read", headers=sent(cookie))).json() == {
            "user": "alice",
            "from_ws": "alice",
        }


async def test_lifespan_and_other_scopes_pass_straight_through() -> None:
    seen: list[str] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])
        assert "session" not in scope
        await send({"type": "lifespan.startup.complete"})

    middleware = SessionMiddleware(inner, secret_key=SECRET, store=MemoryStore())
    sent_messages: list[Any] = []

    async def send(message: Any) -> None:
        sent_messages.append(message)

    await middleware({"type": "lifespan"}, None, send)  # type: ignore[arg-type]
    await middleware({"type": "custom"}, None, send)  # type: ignore[arg-type]
    assert seen == ["lifespan", "custom"]
    assert sent_messages[0] == {"type": "lifespan.startup.complete"}


async def test_the_default_store_is_sqlite_and_closed_on_lifespan_shutdown(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("asgi_sessions.stores.sqlite")
    from asgi_sessions import SQLiteStore

    monkeypatch.chdir(tmp_path)
    closed: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.complete"})
            return
        session = await scope["state"]["session"]
        session["x"] = 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = SessionMiddleware(app, secret_key=SECRET)
    assert isinstance(middleware.store, SQLiteStore)
    original = middleware.store.aclose

    async def spy_close() -> None:
        closed.append(True)
        await original()

    middleware.store.aclose = spy_close  # type: ignore[method-assign]
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=middleware), base_url="http://t"
    ) as client:
        assert "set-cookie" in (await client.get("/")).headers
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])

    async def receive() -> Any:
        return next(messages)

    async def send(message: Any) -> None:
        pass

    await middleware({"type": "lifespan", "state": {}}, receive, send)
    assert closed == [True]
    assert (tmp_path / "sessions.sqlite3").exists()

    # Started again (a test client used twice): a new default store replaces the closed one.
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    first = middleware.store
    await middleware({"type": "lifespan", "state": {}}, receive, send)
    assert middleware.store is not first
    assert middleware.store._closed


def test_store_from_url_builds_a_memory_store_and_refuses_unknown_schemes() -> None:
    assert isinstance(store_from_url("memory://"), MemoryStore)
    for bad in ("ftp://x", "nothing", "sqlite://", "redis://"):
        with pytest.raises(ImproperlyConfigured):
            store_from_url(bad)


def test_memory_store_refuses_a_zero_bound() -> None:
    with pytest.raises(ImproperlyConfigured, match="max_entries"):
        MemoryStore(max_entries=0)


def test_the_verified_cookie_cache_is_bounded_oldest_first() -> None:
    from asgi_sessions.cookies import VerifiedCookies

    cache = VerifiedCookies(limit=2)
    for value, key in (("a", "1"), ("b", "2"), ("c", "3")):
        cache.add(value, key)
    assert [cache.get(v) for v in ("a", "b", "c")] == [None, "2", "3"]


def set_and_read_app() -> SessionMiddleware:
    """``/set`` stores ``user=alice``, ``/read`` answers the session, on a MemoryStore."""

    async def set_view(request: Request) -> JSONResponse:
        session = await request.state.session
        session["user"] = "alice"
        return JSONResponse(dict(session))

    async def read_view(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    inner = Starlette(routes=[Route("/set", set_view), Route("/read", read_view)])
    return SessionMiddleware(inner, secret_key=SECRET, store=MemoryStore())


async def test_a_returning_cookie_skips_the_hmac_and_a_forged_one_is_never_remembered() -> None:
    middleware = set_and_read_app()
    verified = middleware.config.verified
    assert verified is not None
    verify = Signer.verify
    async with client_for(middleware) as client:
        cookie = cookie_value(await client.get("/set"))
        client.cookies.clear()
        forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        with unittest.mock.patch.object(Signer, "verify", autospec=True) as spy:
            spy.side_effect = verify
            for _ in range(3):
                assert (await client.get("/read", headers=sent(cookie))).json() == {"user": "alice"}
            assert spy.call_count == 0  # verified once already, when /set's cookie came back
            for _ in range(2):
                assert (await client.get("/read", headers=sent(forged))).json() == {}
            assert spy.call_count == 2  # a forged value is checked every time
    assert verified.get(cookie) is not None
    assert verified.get(forged) is None


async def test_a_remembered_cookie_header_resolves_as_parsing_it_would() -> None:
    """The whole-header cache (VerifiedCookies.get_header) answers what the parse did: the
    first validly signed duplicate, also behind a forged one; a forged-only header is never
    remembered."""

    middleware = set_and_read_app()
    verified = middleware.config.verified
    assert verified is not None
    async with client_for(middleware) as client:
        cookie = cookie_value(await client.get("/set"))
        client.cookies.clear()
        forged = cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")
        shadowed = f"session={forged}; session={cookie}"
        for _ in range(2):  # parsed, then remembered
            response = await client.get("/read", headers={"cookie": shadowed})
            assert response.json() == {"user": "alice"}
        assert verified.get_header(shadowed.encode()) == (cookie, verified.get(cookie))
        for _ in range(2):
            assert (await client.get("/read", headers=sent(forged))).json() == {}
    assert verified.get_header(f"session={forged}".encode()) is None
