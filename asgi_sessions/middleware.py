"""SessionMiddleware: a pure ASGI middleware that puts a lazy Session on every request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.requests import HTTPConnection

from .cookies import BROWSER_COOKIE_LIMIT, CookieSettings, SameSite, Signer, VerifiedCookies
from .errors import ImproperlyConfigured, SessionInterrupted, SessionStoreError, SessionTooLarge
from .serializers import JSONSerializer, Serializer
from .session import DEFAULT_MAX_AGE, Session, SessionConfig
from .stores.base import Store

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SessionMiddleware", "get_session"]

logger = logging.getLogger("asgi_sessions")

_INTERRUPTED_TEXT = SessionInterrupted().args[0].encode()


async def _send_interrupted(send: Send) -> None:
    """The 400 Django answers when a concurrent request deleted the session (new dicts each
    time: outer middleware may change the messages it passes on)."""
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(_INTERRUPTED_TEXT)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _INTERRUPTED_TEXT})


class SessionMiddleware:
    """Server-side sessions for any ASGI app.

    Puts a lazily loaded :class:`Session` in ``scope["state"]["session"]`` (so
    ``await request.state.session`` works) and ``scope["session"]``. On the response it
    saves only what changed, before the headers go out.

    Args:
        secret_key: signs the cookie; a list rotates keys (the first signs, all verify).
        store: where data lives; by default an ``SQLiteStore("sessions.sqlite3")`` that the
            middleware creates and closes on lifespan shutdown.
        session_cookie: the cookie's name.
        max_age: seconds a session lives after its last save; ``None`` sends a cookie that
            ends with the browser session (the record then lives 14 days).
        path, domain, same_site, https_only, partitioned: cookie attributes, as in Starlette.
        save_every_request: save and re-send the cookie on every request that has a
            session, so ``max_age`` slides (rolling expiry).
        autoload: load before the app runs, so sync code can read ``request.session``
            (a drop-in replacement for ``starlette.middleware.sessions``).
        serializer: encodes each top-level value; JSON by default.
        absolute_timeout: seconds after creation at which a session ends, however often
            it is renewed (``None`` for no cap).
    """

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str | Sequence[str],
        store: Store | None = None,
        *,
        session_cookie: str = "session",
        max_age: int | None = DEFAULT_MAX_AGE,
        path: str = "/",
        domain: str | None = None,
        same_site: SameSite = "lax",
        https_only: bool = False,
        partitioned: bool = False,
        save_every_request: bool = False,
        autoload: bool = False,
        serializer: Serializer | None = None,
        absolute_timeout: int | None = None,
    ) -> None:
        self.app = app
        secrets = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if absolute_timeout is not None and absolute_timeout <= 0:
            raise ImproperlyConfigured(
                f"absolute_timeout must be a positive number of seconds or None, "
                f"not {absolute_timeout!r}."
            )
        self._owns_store = store is None
        if store is None:
            from .stores.sqlite import SQLiteStore

            store = SQLiteStore("sessions.sqlite3")
        elif not isinstance(store, Store):
            raise ImproperlyConfigured(
                f"store must be a Store instance such as SQLiteStore(...) or "
                f"store_from_url(...), not {store!r}."
            )
        self.store = store
        self.save_every_request = save_every_request
        self.autoload = autoload
        self.config = SessionConfig(
            store=store,
            signer=Signer(secrets, salt="asgi_sessions.cookie"),
            serializer=serializer or JSONSerializer(),
            cookie=CookieSettings(
                session_cookie,
                path=path,
                domain=domain,
                same_site=same_site,
                secure=https_only,
                partitioned=partitioned,
            ),
            max_age=max_age,
            absolute_timeout=absolute_timeout,
            # The cookie store's values carry data and an expiry: verify each one afresh.
            verified=None if store.keeps_data_in_cookie else VerifiedCookies(),
        )
        store.bind(self.config.signer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan" and self._owns_store:
                await self.app(scope, receive, self._closing_store_on_shutdown(send))
                return
            await self.app(scope, receive, send)
            return

        session = Session(self.config, scope["headers"])
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["session"] = session
        scope["session"] = session
        if scope_type == "http":
            interrupted = False
            renew = self.save_every_request
            send_response = send

            async def send_with_session(message: Message) -> None:
                # Saves the session, and adds its headers, as the response starts.
                nonlocal interrupted
                if interrupted:
                    return
                if message["type"] == "http.response.start" and (session._loaded or renew):
                    try:
                        await self._finish(session, message)
                    except SessionInterrupted:
                        # Delete wins over a concurrent save (a logout elsewhere): answer
                        # 400 rather than bring the session back.
                        interrupted = True
                        logger.info("Save refused: the session was deleted by another request.")
                        await _send_interrupted(send_response)
                        return
                await send_response(message)

            send = send_with_session
        # WebSocket handlers have no response headers to carry a cookie: they call
        # `await session.save()` themselves.
        try:
            if self.autoload:
                await session.load()
                # Loading for the app is not the app reading it: Vary only if a view looks.
                session.accessed = False
            await self.app(scope, receive, send)
        except SessionStoreError as exc:
            # The request fails (a 5xx from the server or framework) and no cookie was
            # sent, so the user keeps their session for when the store is back.
            logger.error("Session store failed for session %s: %s", session._log_id(), exc)
            raise

    async def _finish(self, session: Session, message: Message) -> None:
        """Save the session if needed and add Set-Cookie / Vary / Cache-Control."""
        if not session._loaded:
            if not (self.save_every_request and session._client_key() is not None):
                return
            await session.load()  # rolling expiry: renew a session nobody touched
        # Raw header lists, not MutableHeaders: this runs on every request that loaded.
        # Changed in place, as Starlette's own middleware does, unless it is not a list.
        headers = message.get("headers")
        if type(headers) is not list:
            message["headers"] = headers = list(headers or ())
        if session.accessed:
            _vary_on_cookie(headers)
        if message["status"] >= 500:
            # As in Django: a failed request must not persist half its work.
            return
        if not (session._modified or session._written or self.save_every_request):
            return  # read-only: nothing to save, no cookie to send
        outcome = await session._finish(self.save_every_request)
        if outcome is None:
            return
        if outcome is True:
            cookie = self.config.cookie.delete_header()
        else:
            cookie = outcome  # type: ignore[assignment]
            if len(cookie) > BROWSER_COOKIE_LIMIT:
                raise SessionTooLarge(
                    f"Session cookie is {len(cookie)} bytes, over the {BROWSER_COOKIE_LIMIT}-byte "
                    "limit browsers keep, so it was not sent. Store less data in the session "
                    "or switch to a server-side store (SQLiteStore, RedisStore)."
                )
        headers.append((b"set-cookie", cookie.encode("latin-1")))
        _vary_on_cookie(headers)
        if not any(name.lower() == b"cache-control" for name, _ in headers):
            # A shared cache must never hand one user's cookie to another.
            headers.append((b"cache-control", b"private"))

    def _closing_store_on_shutdown(self, send: Send) -> Send:
        async def send_closing_store(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.store.aclose()
            await send(message)

        return send_closing_store


def _vary_on_cookie(headers: list[tuple[bytes, bytes]]) -> None:
    """Add ``Cookie`` to the response's Vary header, once."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"cookie" not in tokens and b"*" not in tokens:
                headers[index] = (name, value + b", Cookie")
            return
    headers.append((b"vary", b"Cookie"))


async def get_session(request: HTTPConnection) -> Session:
    """The loaded session: ``session: Session = Depends(get_session)`` in FastAPI."""
    session = request.scope.get("session")
    if not isinstance(session, Session):
        raise ImproperlyConfigured(
            "No session on this request: add SessionMiddleware to the app, e.g. "
            "app.add_middleware(SessionMiddleware, secret_key=...)."
        )
    return await session
