"""The cookie store's figures (issue 5), measured in-process through the ASGI interface.

    .venv/bin/python -m bench.cookie_figures
    .venv/bin/python -m bench.cookie_figures --rounds 41 --requests 500

Two apps with the same trivial endpoints (read one key, write one key), one behind
Starlette's ``SessionMiddleware``, one behind ours with a ``CookieStore``. Requests are
hand-built ASGI scopes fed straight to the app (no HTTP client, no server); the
configurations alternate round by round (A B A B ...) and medians are reported, so drift
(CPU frequency, caches) hits both alike. Then: the largest session that still fits in a
4096-byte cookie, in bytes of compact JSON, with and without compression.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import string
import time
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware

from asgi_sessions import SessionMiddleware, SessionTooLarge
from asgi_sessions.stores import cookie as cookie_module
from asgi_sessions.stores.cookie import CookieStore

SECRET = "bench-secret-key-bench-secret-key-0000"
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]

# A typical session: a handful of short strings an app keeps between requests.
BASE_SESSION = {
    "user_id": "31337",
    "csrf": "f3a9c2e4b1d04a6f8e7c5b3a1d2e4f60",
    "locale": "en-GB",
    "theme": "dark",
    "cart": "sku-1042,sku-2211",
}


# -- the endpoints ----------------------------------------------------------------------


async def _respond(send: Any, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


def starlette_endpoint(action: str) -> ASGIApp:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        if action == "read":
            body = session.get("user_id", "").encode()
        else:
            session["counter"] = scope["counter"]
            body = b"ok"
        await _respond(send, body)

    return app


def our_endpoint(action: str) -> ASGIApp:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = await scope["session"]
        if action == "read":
            body = session.get("user_id", "").encode()
        else:
            session["counter"] = scope["counter"]
            body = b"ok"
        await _respond(send, body)

    return app


def starlette_app(action: str) -> ASGIApp:
    return StarletteSessionMiddleware(starlette_endpoint(action), secret_key=SECRET)  # type: ignore[arg-type,return-value]


def our_app(action: str, store: CookieStore | None = None) -> ASGIApp:
    return SessionMiddleware(our_endpoint(action), secret_key=SECRET, store=store or CookieStore())  # type: ignore[arg-type,return-value]


# -- driving an ASGI app by hand --------------------------------------------------------


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def scope_for(cookie: str | None, counter: int = 0) -> dict[str, Any]:
    headers = [(b"host", b"bench"), (b"user-agent", b"bench/1.0"), (b"accept", b"*/*")]
    if cookie is not None:
        headers.append((b"cookie", f"other=1; session={cookie}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("bench", 80),
        "counter": counter,
    }


async def call(app: ASGIApp, scope: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await app(scope, _receive, send)
    return messages


def set_cookie_of(messages: list[dict[str, Any]]) -> str | None:
    for name, value in messages[0].get("headers", ()):
        if name.lower() == b"set-cookie":
            return bytes(value).decode("latin-1")
    return None


def cookie_value(header: str) -> str:
    parsed: SimpleCookie = SimpleCookie()
    parsed.load(header)
    return parsed["session"].value


async def seeded_cookie(writer: ASGIApp, data: dict[str, str]) -> str:
    """A session cookie holding ``data``, issued by ``writer`` (a write app)."""

    async def fill(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = scope["session"]
        if not isinstance(session, dict) or hasattr(session, "__await__"):
            session = await session
        session.update(data)
        await _respond(send, b"ok")

    middleware: Any = writer
    inner = middleware.app
    middleware.app = fill
    try:
        header = set_cookie_of(await call(writer, scope_for(None)))
    finally:
        middleware.app = inner
    assert header is not None
    return cookie_value(header)


# -- timing -----------------------------------------------------------------------------


async def per_request(app: ASGIApp, cookie: str, requests: int, check: bool) -> float:
    scopes = [scope_for(cookie, i) for i in range(requests)]
    start = time.process_time()
    for scope in scopes:
        await call(app, scope)
    elapsed = (time.process_time() - start) / requests
    if check:  # outside the timed loop: the endpoint did what it says
        messages = await call(app, scope_for(cookie, 7))
        assert messages[1]["body"] in (b"ok", BASE_SESSION["user_id"].encode()), messages
    return elapsed


async def interleaved(
    sides: dict[str, tuple[ASGIApp, str]], rounds: int, requests: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for round_ in range(rounds):
        for name, (app, cookie) in sides.items():
            samples[name].append(await per_request(app, cookie, requests, round_ == 0))
    return {name: statistics.median(values) for name, values in samples.items()}


def us(seconds: float) -> str:
    return f"{seconds * 1e6:7.1f} us"


async def speed(rounds: int, requests: int) -> None:
    for action, goal in (("read", 0.8), ("write", 0.8)):
        theirs, ours = starlette_app(action), our_app(action)
        their_cookie = await seeded_cookie(starlette_app("write"), BASE_SESSION)
        our_cookie = await seeded_cookie(our_app("write"), BASE_SESSION)
        # Warm up both before timing.
        await interleaved({"a": (theirs, their_cookie), "b": (ours, our_cookie)}, 2, requests)
        medians = await interleaved(
            {"starlette": (theirs, their_cookie), "ours": (ours, our_cookie)}, rounds, requests
        )
        ratio = medians["ours"] / medians["starlette"]
        print(
            f"{action} one key ({len(json.dumps(BASE_SESSION))}-byte session), median per request"
        )
        print(f"    Starlette SessionMiddleware      {us(medians['starlette'])}")
        print(f"    ours + CookieStore               {us(medians['ours'])}")
        verdict = "met" if ratio <= goal else "MISSED"
        print(f"    ratio ours/Starlette {ratio:.2f}x (goal <= {goal}x: {verdict})")


# -- capacity ---------------------------------------------------------------------------

WORDS = [
    "en-GB", "dark", "light", "Europe/London", "admin", "editor", "viewer", "sku-1042",
    "checkout", "basket", "/dashboard", "/settings/profile", "true", "false", "grid", "list",
]  # fmt: skip


def typical(size: int) -> dict[str, str]:
    """``size`` entries of a dict of short strings, as apps keep (preferences, flags, ids)."""
    rng = random.Random(5)
    return {f"pref_{i}": rng.choice(WORDS) for i in range(size)}


def incompressible(size: int) -> dict[str, str]:
    """One random string of ``size`` printable ASCII characters (no quotes or backslashes)."""
    rng = random.Random(7)
    alphabet = "".join(c for c in string.printable[:94] if c not in '"\\')
    return {"blob": "".join(rng.choice(alphabet) for _ in range(size))}


async def fits(data: dict[str, str], compress: bool) -> bool:
    async def fill(scope: dict[str, Any], receive: Any, send: Any) -> None:
        session = await scope["session"]
        session.update(data)
        await _respond(send, b"ok")

    app = SessionMiddleware(fill, secret_key=SECRET, store=CookieStore())  # type: ignore[arg-type]
    saved = cookie_module._MIN_COMPRESSIBLE
    if not compress:
        cookie_module._MIN_COMPRESSIBLE = 1 << 30
    try:
        header = set_cookie_of(await call(app, scope_for(None)))  # type: ignore[arg-type]
    except SessionTooLarge:
        return False
    finally:
        cookie_module._MIN_COMPRESSIBLE = saved
    assert header is not None and len(header) <= 4096
    return True


async def largest(make: Callable[[int], dict[str, str]], compress: bool) -> int:
    low, high = 1, 1
    while await fits(make(high), compress):
        low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        if await fits(make(middle), compress):
            low = middle
        else:
            high = middle
    return len(json.dumps(make(low), separators=(",", ":"), ensure_ascii=False).encode())


def starlette_largest(make: Callable[[int], dict[str, str]]) -> int:
    """Starlette sends any size; the largest whose header stays within 4096 bytes."""
    overhead = len("session=; path=/; Max-Age=1209600; httponly; samesite=lax")
    signature = 1 + 6 + 1 + 27  # .timestamp.sha1-signature (itsdangerous)
    low, high = 1, 4096
    while high - low > 1:
        middle = (low + high) // 2
        raw = json.dumps(make(middle)).encode()  # Starlette: json.dumps, then base64
        size = overhead + 4 * ((len(raw) + 2) // 3) + signature
        low, high = (middle, high) if size <= 4096 else (low, middle)
    return len(json.dumps(make(low), separators=(",", ":")).encode())


async def capacity() -> None:
    print("largest session that fits in a 4096-byte Set-Cookie, bytes of compact JSON")
    print("                                   compressed   uncompressed   Starlette")
    for label, make in (
        ("dict of short strings", typical),
        ("random ASCII string", incompressible),
    ):
        zipped = await largest(make, compress=True)
        plain = await largest(make, compress=False)
        print(f"    {label:28}  {zipped:9,}   {plain:12,}   {starlette_largest(make):9,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31, help="interleaved rounds per side")
    parser.add_argument("--requests", type=int, default=300, help="requests per round")
    args = parser.parse_args()
    print(f"{args.rounds} rounds x {args.requests} requests per side, interleaved")
    asyncio.run(speed(args.rounds, args.requests))
    asyncio.run(capacity())


if __name__ == "__main__":
    main()
