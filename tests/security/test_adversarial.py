"""Hostile clients: cookie shadowing, prefixes, fixation, replay, floods, caching, timeouts.

security.md 2.1, 2.4, 2.7, 2.8, 2.9 and 2.12. The documented cookie rule: only an exact
name match counts (only SP and HTAB are trimmed), and among duplicates the first validly
signed value wins.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from asgi_sessions import ImproperlyConfigured, MemoryStore, SessionMiddleware, Store
from asgi_sessions.cookies import Signer
from tests.clock import FakeClock
from tests.support import SECRET, StoreSpy, app_with, client_for, cookie_value

SIGNER = Signer([SECRET], salt="asgi_sessions.cookie")


async def _peek(session: Any, request: Any) -> dict[str, Any]:
    return {"data": session.copy(), "key": session.session_key}


async def _login(session: Any, request: Any) -> dict[str, Any]:
    session["user"] = request.query_params.get("user", "alice")
    await session.cycle_key()
    return {"key": session.session_key}


async def _write(session: Any, request: Any) -> dict[str, Any]:
    session["note"] = "hello"
    return {"key": session.session_key}


async def _logout(session: Any, request: Any) -> dict[str, Any]:
    await session.flush()
    return {"ok": True}


async def _cycle(session: Any, request: Any) -> dict[str, Any]:
    await session.cycle_key()
    return {"key": session.session_key}


HANDLERS = {"peek": _peek, "login": _login, "write": _write, "logout": _logout, "cycle": _cycle}


async def _log_in(client: httpx.AsyncClient, user: str, name: str = "session") -> str:
    response = await client.post("/login", params={"user": user}, headers={"cookie": ""})
    assert response.status_code == 200
    return cookie_value(response, name)


async def _peek_with(client: httpx.AsyncClient, header: bytes) -> dict[str, Any]:
    response = await client.get("/peek", headers=[(b"cookie", header)])
    assert response.status_code == 200
    result: dict[str, Any] = response.json()
    return result


# -- shadowing and duplicates ---------------------------------------------------------

# Characters Python's str.strip() (and so Starlette's cookie parser) removes but browsers
# keep as part of the name.
LOOKALIKE_PREFIXES = ["\u00a0", "\u2000", "\u3000", "\u200a", "\x0b", "\x0c", "\x1c", "\x85"]


@pytest.mark.parametrize("prefix", LOOKALIKE_PREFIXES, ids=ascii)
async def test_a_cookie_whose_name_only_looks_like_the_session_cookie_never_shadows_it(
    any_store: Store, prefix: str
) -> None:
    app = app_with(any_store, HANDLERS)
    async with client_for(app) as client:
        victim = await _log_in(client, "victim")
        attacker = await _log_in(client, "attacker")
        for header in (
            f"{prefix}session={attacker}; session={victim}",
            f"session={victim}; {prefix}session={attacker}",
            f"=session={attacker}; session={victim}",
            f"{prefix}session={attacker};session={victim}",
        ):
            result = await _peek_with(client, header.encode())
            assert result["data"] == {"user": "victim"}, header


@pytest.mark.parametrize("prefix", [*LOOKALIKE_PREFIXES, "="], ids=ascii)
async def test_a_lookalike_cookie_alone_gives_a_fresh_session_without_a_store_lookup(
    any_store: Store, prefix: str
) -> None:
    app = app_with(any_store, HANDLERS)
    async with client_for(app) as client:
        attacker = await _log_in(client, "attacker")
        spy = StoreSpy(any_store)
        result = await _peek_with(client, f"{prefix}session={attacker}".encode())
        assert result == {"data": {}, "key": None}
        assert spy.calls == {}


async def test_among_duplicate_session_cookies_the_first_validly_signed_one_wins(
    any_store: Store,
) -> None:
    app = app_with(any_store, HANDLERS)
    async with client_for(app) as client:
        first = await _log_in(client, "first")
        second = await _log_in(client, "second")
        forged = SIGNER.sign("x" * 43)[:-2] + "AA"
        cases = {
            f"session=garbage; session={first}; session={second}": "first",
            f"session={forged}; session={second}; session={first}": "second",
            f"session=; session={first}": "first",
            f"session={first}; session={second}": "first",
            f"session={second}; session={first}": "second",
            f"other=1; session = {first} ; x=y": "first",
            f"session=\t{second}\t": "second",
        }
        for header, owner in cases.items():
            result = await _peek_with(client, header.encode())
            assert result["data"] == {"user": owner}, header


# -- cookie prefixes ------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"session_cookie": "__Host-session"},
        {"session_cookie": "__Host-session", "https_only": True, "path": "/app"},
        {"session_cookie": "__Host-session", "https_only": True, "domain": "example.com"},
        {"session_cookie": "__Secure-session"},
    ],
    ids=["host-not-secure", "host-with-path", "host-with-domain", "secure-not-secure"],
)
def test_a_prefixed_cookie_name_with_attributes_browsers_reject_is_refused_at_start_up(
    options: dict[str, Any],
) -> None:
    with pytest.raises(ImproperlyConfigured):
        SessionMiddleware(app=None, secret_key=SECRET, store=MemoryStore(), **options)  # type: ignore[arg-type]


async def test_a_host_prefixed_cookie_is_secure_on_path_root_with_no_domain_and_not_shadowed(
    any_store: Store,
) -> None:
    name = "__Host-session"
    app = app_with(any_store, HANDLERS, session_cookie=name, https_only=True)
    async with client_for(app) as client:
        response = await client.post("/login", params={"user": "victim"})
        header = response.headers["set-cookie"]
        assert header.startswith(f"{name}=")
        attributes = [part.strip().lower() for part in header.split(";")[1:]]
        assert "secure" in attributes
        assert "path=/" in attributes
        assert "httponly" in attributes
        assert not any(part.startswith("domain") for part in attributes)
        victim = cookie_value(response, name)
        attacker_response = await client.post(
            "/login", params={"user": "attacker"}, headers={"cookie": ""}
        )
        attacker = cookie_value(attacker_response, name)
        for prefix in ("\u00a0", "\u2000", "="):
            shadowed = f"{prefix}{name}={attacker}; {name}={victim}".encode()
            assert (await _peek_with(client, shadowed))["data"] == {"user": "victim"}
        # Without the prefix the name is a different cookie altogether.
        unprefixed = f"session={attacker}; Host-session={attacker}".encode()
        assert (await _peek_with(client, unprefixed))["data"] == {}


# -- fixation and replay --------------------------------------------------------------


async def test_a_validly_signed_but_unknown_key_is_never_adopted_nor_stored_under(
    store: Store,
) -> None:
    app = app_with(store, HANDLERS)
    chosen = secrets.token_urlsafe(32)
    planted = SIGNER.sign(chosen)
    async with client_for(app) as client:
        spy = StoreSpy(store)
        read = await _peek_with(client, f"session={planted}".encode())
        assert read == {"data": {}, "key": None}
        assert spy.writes == 0
        for route in ("/write", "/login"):
            response = await client.post(route, headers={"cookie": f"session={planted}"})
            assert response.status_code == 200
            issued = cookie_value(response)
            assert issued != planted
            assert chosen not in response.headers["set-cookie"]
            key = (await _peek_with(client, f"session={issued}".encode()))["key"]
            assert key not in (None, chosen)
        assert await store.get(chosen) is None


async def test_an_old_cookie_replayed_after_flush_loads_an_empty_session(store: Store) -> None:
    app = app_with(store, HANDLERS)
    async with client_for(app) as client:
        old = await _log_in(client, "alice")
        key = (await _peek_with(client, f"session={old}".encode()))["key"]
        response = await client.post("/logout", headers={"cookie": f"session={old}"})
        assert response.status_code == 200
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert await store.get(key) is None
        assert await _peek_with(client, f"session={old}".encode()) == {"data": {}, "key": None}
        # Nor does writing with it bring the old key back.
        again = await client.post("/write", headers={"cookie": f"session={old}"})
        renewed = (await _peek_with(client, f"session={cookie_value(again)}".encode()))["key"]
        assert renewed not in (None, key)
        assert await store.get(key) is None


async def test_an_old_cookie_replayed_after_cycle_key_loads_an_empty_session(
    store: Store,
) -> None:
    app = app_with(store, HANDLERS)
    async with client_for(app) as client:
        old = await _log_in(client, "alice")
        old_key = (await _peek_with(client, f"session={old}".encode()))["key"]
        response = await client.post("/cycle", headers={"cookie": f"session={old}"})
        new = cookie_value(response)
        new_key = response.json()["key"]
        assert new_key != old_key
        assert await store.get(old_key) is None
        assert await _peek_with(client, f"session={old}".encode()) == {"data": {}, "key": None}
        fresh = await _peek_with(client, f"session={new}".encode())
        assert fresh == {"data": {"user": "alice"}, "key": new_key}


# -- empty-session flood (Django CVE-2015-5143) ---------------------------------------


async def _reader(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/read":
        session = await scope["session"]
        session.get("user")
        "user" in session  # noqa: B015
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _call(app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> Any:
    """One GET straight through the ASGI app; returns the response-start message."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("testserver", 80),
    }
    messages: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        messages.append(message)

    await app(scope, receive, send)
    return messages[0]


FLOOD = 10_000


@pytest.mark.parametrize("save_every_request", [False, True], ids=["plain", "rolling"])
async def test_a_flood_of_anonymous_and_unknown_cookie_requests_writes_nothing_and_sets_no_cookie(
    store: Store, save_every_request: bool
) -> None:
    app = SessionMiddleware(
        _reader, secret_key=SECRET, store=store, save_every_request=save_every_request
    )
    spy = StoreSpy(store)
    anonymous = [("/read" if i % 2 else "/", [(b"host", b"testserver")]) for i in range(FLOOD)]
    unknown = [
        (
            "/read" if i % 2 else "/",
            [(b"cookie", f"session={SIGNER.sign(secrets.token_urlsafe(32))}".encode())],
        )
        for i in range(FLOOD)
    ]
    set_cookies = 0
    statuses: set[int] = set()
    for requests in (anonymous, unknown):
        for start in range(0, FLOOD, 100):
            batch = requests[start : start + 100]
            answers = await asyncio.gather(*(_call(app, p, h) for p, h in batch))
            for answer in answers:
                statuses.add(answer["status"])
                set_cookies += sum(1 for name, _ in answer["headers"] if name == b"set-cookie")
    assert statuses == {200}
    assert set_cookies == 0
    assert spy.writes == 0
    assert spy.calls["save"] == 0
    # Every validly signed cookie cost one lookup; with rolling expiry the untouched routes
    # look too (to renew), without it they do not.
    assert spy.calls["load"] == (FLOOD if save_every_request else FLOOD // 2)
    if isinstance(store, MemoryStore):
        assert len(store) == 0


# -- caching headers ------------------------------------------------------------------


async def test_responses_that_set_or_delete_the_cookie_say_vary_cookie_and_cache_control_private(
    any_store: Store,
) -> None:
    app = app_with(any_store, HANDLERS)
    async with client_for(app) as client:
        login = await client.post("/login")
        logout = await client.post("/logout")
        assert "Max-Age=0" in logout.headers["set-cookie"]
        for response in (login, logout):
            assert "set-cookie" in response.headers
            vary = [token.strip().lower() for token in response.headers["vary"].split(",")]
            assert "cookie" in vary
            assert response.headers["cache-control"] == "private"
        untouched = await client.get("/untouched")
        assert "set-cookie" not in untouched.headers
        assert "cache-control" not in untouched.headers


# -- absolute timeout -----------------------------------------------------------------


async def test_absolute_timeout_caps_a_session_that_rolling_expiry_keeps_renewing(
    any_store: Store, clock: FakeClock
) -> None:
    app = app_with(any_store, HANDLERS, max_age=100, absolute_timeout=250, save_every_request=True)
    async with client_for(app) as client:
        cookie = await _log_in(client, "alice")
        for elapsed in (60, 120, 180, 240):
            clock.advance(60)
            response = await client.get("/peek", headers={"cookie": f"session={cookie}"})
            assert response.json()["data"] == {"user": "alice"}, elapsed
            # Renewed on every request, but the cookie never outlives the cap.
            cookie = cookie_value(response)
            max_age = int(response.headers["set-cookie"].split("Max-Age=")[1].split(";")[0])
            assert max_age <= 250 - elapsed + 1
        clock.advance(20)  # 260 s after login: past the cap, though renewed 20 s ago
        late = await client.get("/peek", headers={"cookie": f"session={cookie}"})
        assert late.json()["data"] == {}
