"""Small helpers for tests: an app around one handler, an HTTP client, a store spy, the
changes a store is asked to save, an app switching from Starlette's sessions, the Python
blocks of the README."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware as StarletteSessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from asgi_sessions import Session, SessionMiddleware, Store
from asgi_sessions.stores.base import SessionWrite

SECRET = "test-secret-key-that-is-long-enough-000"
ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

Handler = Callable[[Session, Request], Awaitable[Any]]


def app_with(store: Store, handlers: dict[str, Handler], **options: Any) -> Starlette:
    """A Starlette app whose routes each await the session and call one handler.

    A handler returns a Response, or anything JSON-able (sent as JSON); ``/untouched``
    never touches the session.
    """

    def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            session = await request.state.session
            result = await handler(session, request)
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return run

    async def untouched(request: Request) -> Response:
        return JSONResponse({"ok": True})

    routes = [
        Route(f"/{name}", endpoint(h), methods=["GET", "POST"]) for name, h in handlers.items()
    ]
    routes.append(Route("/untouched", untouched))
    options.setdefault("secret_key", SECRET)
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, store=store, **options)]
    )


@asynccontextmanager
async def client_for(
    app: Any, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def cookie_value(response: httpx.Response, name: str = "session") -> str:
    """The value the response's Set-Cookie gives to ``name``."""
    header = response.headers["set-cookie"]
    match = re.match(rf"{re.escape(name)}=([^;]*);", header)
    assert match is not None, header
    return match[1]


def sent(value: str, name: str = "session") -> dict[str, str]:
    """Request headers that send the cookie ``name=value`` (overriding the client's jar)."""
    return {"cookie": f"{name}={value}"}


class StoreSpy:
    """Counts calls to a store's public operations, without changing what they do."""

    def __init__(self, store: Store) -> None:
        self.calls: Counter[str] = Counter()
        for name in ("load", "create", "save", "rotate", "delete"):
            original = getattr(store, name)

            def counted(*args: Any, _original: Any = original, _name: str = name) -> Any:
                self.calls[_name] += 1
                return _original(*args)

            setattr(store, name, counted)

    @property
    def writes(self) -> int:
        return sum(self.calls[name] for name in ("create", "save", "rotate", "delete"))


def make_config(store: Store, **options: Any) -> Any:
    """The SessionConfig a middleware with these options would build."""
    options.setdefault("secret_key", SECRET)
    return SessionMiddleware(app=None, store=store, **options).config  # type: ignore[arg-type]


async def saved_session(store: Store, data: dict[str, Any], **options: Any) -> tuple[Any, str]:
    """Store ``data`` as a session; return (config, signed cookie value)."""
    config = make_config(store, **options)
    session = Session(config)
    await session.load()
    session.update(data)
    await session.save()
    assert session.session_key is not None
    return config, config.signer.sign(session.session_key)


def headers_with(cookie: str, name: str = "session") -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"{name}={cookie}".encode())]


def encoded(data: Mapping[str, object]) -> dict[str, str]:
    """``data`` with each value JSON-encoded, as ``SessionWrite.set`` holds them."""
    return {key: json.dumps(value) for key, value in data.items()}


_UNCHANGED: Any = object()


def session_write(
    now: float,
    *,
    set: Mapping[str, str] | None = None,
    deleted: frozenset[str] = frozenset(),
    create: bool = False,
    replace: bool = False,
    owner: str | None = _UNCHANGED,
    expiry: str | None = _UNCHANGED,
    ttl: float = 3600,
    created_at: float | None = None,
    cap: float | None = None,
    device: str | None = None,
) -> SessionWrite:
    """A change made at ``now``; a record with no expiry setting of its own ends ``ttl``
    seconds later.

    ``set`` holds already-encoded values (see ``encoded``). ``owner`` and ``expiry`` are
    written only when given (a new record without them has neither). ``created_at``
    defaults to ``now``. ``device`` goes with the owner (asgi_sessions.devices).
    """
    return SessionWrite(
        set=set or {},
        deleted=deleted,
        replace=replace,
        create=create,
        now=now,
        default_expires_at=now + ttl,
        expires_cap=cap,
        created_at=now if created_at is None else created_at,
        owner=None if owner is _UNCHANGED else owner,
        owner_changed=owner is not _UNCHANGED,
        expiry=None if expiry is _UNCHANGED else expiry,
        expiry_changed=expiry is not _UNCHANGED,
        device=device,
    )


async def run_websocket(app: Any, path: str, cookie: str) -> list[dict[str, Any]]:
    """Connect to ``path`` with the session cookie, let the handler run to its close, and
    return the messages it sent (``type`` and ``text`` only)."""
    scope = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "scheme": "ws",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"cookie", f"session={cookie}".encode())],
        "subprotocols": [],
        "client": ("127.0.0.1", 1),
        "server": ("testserver", 80),
        "asgi": {"version": "3.0"},
    }
    incoming = [{"type": "websocket.connect"}]
    sent_messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent_messages.append(message)

    await app(scope, receive, send)
    return [{k: v for k, v in m.items() if k in ("type", "text")} for m in sent_messages]


# -- switching from Starlette's SessionMiddleware (the importers) ----------------------

OLD_SECRET = "the-secret-the-old-app-signed-with"


def old_view(request: Request) -> JSONResponse:
    """The app before the switch: a sync view on request.session, as both libraries allow."""
    for name, value in request.query_params.items():
        request.session[name] = value
    return JSONResponse(dict(request.session))


async def new_view(request: Request) -> JSONResponse:
    """The app after the switch: the session's data and key; ``?logout=1`` flushes it."""
    session = await request.state.session
    if request.query_params.get("logout"):
        await session.flush()
    return JSONResponse({"data": session.copy(), "key": session.session_key})


def new_app(store: Store, *importers: Any, **options: Any) -> Starlette:
    """Our middleware on ``store``, taking over the old sessions ``importers`` recognise."""
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
    """Request headers that send only the cookie ``name=value``."""
    return {"cookie": f"{name}={value}"}


def set_cookies(response: httpx.Response) -> list[str]:
    """Every ``Set-Cookie`` header of the response."""
    return response.headers.get_list("set-cookie")


# -- the README's Python blocks --------------------------------------------------------

BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """Each Python block of a Markdown file, with the line it starts on."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start()) + 2, m[1]) for m in BLOCK.finditer(text)]


def section_source(title: str) -> str:
    """The Python blocks of one README section (``## title``), as one file."""
    section = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README.read_text(), re.S | re.M)
    assert section is not None, f"README.md has no '## {title}' section"
    blocks = BLOCK.findall(section[1])
    assert blocks, f"README.md's '## {title}' section has no python block"
    return "\n\n".join(blocks)
