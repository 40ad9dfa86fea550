"""SessionMiddleware: a pure ASGI middleware that puts a lazy Session on every request."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from starlette.requests import HTTPConnection

from .cookies import (
    BROWSER_COOKIE_LIMIT,
    CookieSettings,
    SameSite,
    Signer,
    VerifiedCookies,
    cookie_values,
)
from .devices import RecordIP, check_record_ip
from .errors import ImproperlyConfigured, SessionInterrupted, SessionStoreError, SessionTooLarge
from .events import SessionEvents
from .importers import Importer
from .observer import Observer
from .serializers import JSONSerializer, Serializer
from .session import DEFAULT_MAX_AGE, Session, SessionConfig
from .stores.base import Store

#: With ``save_every_request=True``, a session is renewed at most this often (seconds).
DEFAULT_RENEW_INTERVAL = 60

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .telemetry import Telemetry

__all__ = ["SessionMiddleware", "get_session"]

logger = logging.getLogger("asgi_sessions")

_INTERRUPTED_TEXT = SessionInterrupted().args[0].encode()
_UNAVAILABLE_TEXT = b"The session store is unavailable. Please try again shortly."
_SERVER_ERROR_TEXT = b"Internal Server Error"
_NO_HEADERS: tuple[tuple[bytes, bytes], ...] = ()


async def _send_plain(send: Send, status: int, body: bytes, *extra: tuple[bytes, bytes]) -> None:
    """A short plain-text response (new dicts each time: outer middleware may change the
    messages it passes on)."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
        renew_interval: with ``save_every_request``, renew a session at most once per this
            many seconds, so rolling expiry does not cost a write per request; never more
            than a tenth of the session's own idle window (``set_expiry(n)``, else
            ``max_age``), so a client that comes back within nine tenths of that window
            is never signed out by expiry. A concurrent request sees the renewal only
            once it loads after it.
        rotate_on_owner_change: give the session a new key whenever ``session.owner``
            changes (login, logout, switching user), as ``cycle_key()`` does.
        detect_nested_changes: find lists and dicts changed in place (the view read them
            from the session) and save them, even when nothing else changed.
        retry_after: seconds sent in ``Retry-After`` with the 503 answered when the store
            fails before the response starts.
        import_from: importers of another library's sessions (``FromStarlette``,
            ``FromStarsessions``), so that switching signs nobody out.
        events: lifecycle handlers (``SessionEvents(on_created=..., ...)``), run after the
            store committed and before the response starts; bound to the store too, so
            ``store.revoke()`` and ``clear_expired()`` fire them outside requests.
        telemetry: OpenTelemetry metrics and spans (``Telemetry()`` from
            :mod:`asgi_sessions.telemetry`, with the ``[otel]`` extra).
        record_ip: keep the client address with a signed-in session's device, for
            "your devices" pages: ``False`` (default, none), ``True`` (whole) or
            ``(24, 48)`` (only its IPv4 /24 or IPv6 /48 network). The user agent is
            always kept for owned sessions (:mod:`asgi_sessions.devices`).
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
        autoload: bool | Sequence[str] = False,
        serializer: Serializer | None = None,
        absolute_timeout: int | None = None,
        renew_interval: float = DEFAULT_RENEW_INTERVAL,
        rotate_on_owner_change: bool = True,
        detect_nested_changes: bool = True,
        retry_after: int = 5,
        import_from: Sequence[Importer] = (),
        events: SessionEvents | None = None,
        telemetry: Telemetry | None = None,
        record_ip: RecordIP = False,
    ) -> None:
        self.app = app
        secrets = [secret_key] if isinstance(secret_key, str) else list(secret_key)
        if absolute_timeout is not None and absolute_timeout <= 0:
            raise ImproperlyConfigured(
                f"absolute_timeout must be a positive number of seconds or None, "
                f"not {absolute_timeout!r}."
            )
        if renew_interval < 0:
            raise ImproperlyConfigured(
                f"renew_interval must be 0 or more seconds, not {renew_interval!r}."
            )
        if max_age is not None and max_age <= 0:
            # Not refused: Starlette accepts it (its own tests use max_age=-1 and 0, and the
            # drop-in promise keeps them passing). But nothing persists, so say so loudly.
            logger.warning(
                "SessionMiddleware(max_age=%r): every session cookie is sent already "
                "expired, so no session persists. For a cookie that ends when the browser "
                "closes, use max_age=None.",
                max_age,
            )
        self._owns_store = store is None
        if store is None:
            store = _default_store()
        elif not isinstance(store, Store):
            raise ImproperlyConfigured(
                f"store must be a Store instance such as SQLiteStore(...) or "
                f"store_from_url(...), not {store!r}."
            )
        self.store = store
        self.save_every_request = save_every_request
        self.autoload = autoload
        self._autoload_paths = _path_prefixes(autoload)
        self._retry_after = str(int(retry_after)).encode()
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
            # Cookie-store values carry the data (up to 4 KB each): remember fewer of them.
            # Their expiry is checked on every load, cached or not.
            verified=VerifiedCookies(1_000 if store.keeps_data_in_cookie else 10_000),
            rotate_on_owner_change=rotate_on_owner_change,
            detect_nested_changes=detect_nested_changes,
            # Each session caps it at a tenth of its own idle window (expiry.renewal_interval).
            renew_interval=renew_interval,
            importers=_importers(import_from),
            events=_events(events, telemetry),
            telemetry=telemetry,
            record_ip=check_record_ip(record_ip),
        )
        if telemetry is not None:
            telemetry.instrument(store)
        store.bind(self.config.signer)
        if self.config.events is not None:
            store.events = self.config.events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope["type"]
        if scope_type != "http" and scope_type != "websocket":
            if scope_type == "lifespan" and self._owns_store:
                await self.app(scope, self._reopening_store(receive), self._closing_store(send))
                return
            await self.app(scope, receive, send)
            return

        session = Session(self.config, scope["headers"], scope.get("client"))
        events = self.config.events
        if events is not None and events.listening():  # else no event would reach anyone
            session._observer = Observer(events, scope)
        state = scope.get("state")
        if state is None:
            scope["state"] = state = {}
        state["session"] = session
        scope["session"] = session
        if scope_type == "websocket":
            # No response headers to carry a cookie: handlers `await session.save()`.
            if self.autoload and self._autoloads(scope):
                await session.load()
                session.accessed = False
            await self.app(scope, receive, send)
            return

        started = answered = False
        renew = self.save_every_request
        importers = self.config.importers

        async def send_with_session(message: Message) -> None:
            # Saves the session, and adds its headers, as the response starts.
            nonlocal started, answered
            if answered:
                return  # we answered 400/503 instead of the app's response
            if message["type"] == "http.response.start":
                if session._loaded and not (renew or importers) and session._unchanged():
                    # Read only (the commonest case): no save, no cookie; Vary if it looked.
                    if session.accessed:
                        message = _with_vary(message)
                elif session._loaded or renew:
                    try:
                        message = await self._finish(session, message)
                    except (SessionInterrupted, SessionStoreError) as exc:
                        answered = True
                        await self._answer_failure(send, session, exc)
                        return
                started = True
            await send(message)

        try:
            if self.autoload and self._autoloads(scope):
                await session.load()
                # Loading for the app is not the app reading it: Vary only if a view looks.
                session.accessed = False
            await self.app(scope, receive, send_with_session)
        except (SessionInterrupted, SessionStoreError) as exc:
            if answered:
                return  # answered and logged already, as the response started
            if started:
                # Too late for a clean answer: the server ends the response.
                self._log_failure(session, exc)
                raise
            answered = True
            await self._answer_failure(send, session, exc)

    def _autoloads(self, scope: Scope) -> bool:
        paths = self._autoload_paths
        if paths is None:
            return bool(self.autoload)
        path: str = scope.get("path", "")
        return any(path == prefix or path.startswith(prefix.rstrip("/") + "/") for prefix in paths)

    async def _answer_failure(self, send: Send, session: Session, exc: Exception) -> None:
        """Answer a session failure that happened before the response started."""
        telemetry = self.config.telemetry
        if telemetry is not None:
            closed = not isinstance(exc, SessionInterrupted) and self.config.store._closed
            status = 400 if isinstance(exc, SessionInterrupted) else 500 if closed else 503
            telemetry.failed(self.config.store, status, exc)
        if not isinstance(exc, SessionInterrupted) and self.config.store._closed:
            # A store used after aclose() is a programming error, not an outage: a 500
            # without Retry-After (trying again cannot help), and the reason in the log.
            logger.error("Session store is closed (a programming error): %s", exc)
            await _send_plain(send, 500, _SERVER_ERROR_TEXT)
            return
        self._log_failure(session, exc)
        if isinstance(exc, SessionInterrupted):
            # Delete wins over a concurrent save (a logout elsewhere): answer 400, as
            # Django does, rather than bring the session back.
            await _send_plain(send, 400, _INTERRUPTED_TEXT)
        else:
            # The store is down: a 503 the client may retry, and no cookie change, so the
            # user keeps their session for when the store is back. Unless a create or a
            # rotation may have happened anyway (OutcomeUnknown): then the cookie that
            # works either way, so that nobody is left holding a dead key.
            extra = [(b"retry-after", self._retry_after)]
            cookie = session._outcome_cookie()
            if cookie is not None:
                extra += [(b"set-cookie", cookie.encode("latin-1")), (b"cache-control", b"private")]
            await _send_plain(send, 503, _UNAVAILABLE_TEXT, *extra)

    @staticmethod
    def _log_failure(session: Session, exc: Exception) -> None:
        if isinstance(exc, SessionInterrupted):
            logger.info("Save refused: the session was deleted by another request.")
        else:
            logger.error("Session store failed for session %s: %s", session._log_id(), exc)

    async def _finish(self, session: Session, message: Message) -> Message:
        """Save the session if needed; return the start message with Set-Cookie / Vary /
        Cache-Control added (to a copy: the app may reuse its own message and headers)."""
        if not session._loaded:
            if not (self.save_every_request and session._client_key() is not None):
                return message
            await session.load()  # rolling expiry: renew a session nobody touched
        if session._unknown is not None:
            # A write may or may not have happened and the app answered anyway (it caught
            # the error): the 503 carries the cookie that works either way.
            raise session._unknown[0]
        headers = list(message.get("headers") or ())
        message = {**message, "headers": headers}
        if message["status"] >= 500:
            # As in Django: a failed request must not persist half its work.
            if session.accessed:
                _vary_on_cookie(headers)
            return message
        if (
            session._modified
            or session._written
            or session._dropped
            or session._handed
            or session._handed_all
            or session._stale_cookie
            or self.save_every_request
            or session._imported_from is not None
            or (self.config.importers and session._retiring())
        ):
            outcome = await session._finish(self.save_every_request)
        else:
            outcome = None  # read-only: nothing to save, no cookie to send
        # An old library's cookie under another name that imported nothing (refused, too
        # old, or we had a session already): remove it, or it stays in the browser.
        config = self.config
        refused = _refused_old_cookies(config, session) if config.importers else _NO_HEADERS
        if outcome is None:
            if refused:
                private = _vary_on_cookie(headers)
                headers += refused
                if private:
                    headers.append((b"cache-control", b"private"))
            elif session.accessed:
                _vary_on_cookie(headers)
            return message
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
        # A shared cache must never hand one user's cookie to another: Cache-Control:
        # private, unless the app chose its own.
        private = _vary_on_cookie(headers)
        headers.append((b"set-cookie", cookie.encode("latin-1")))
        headers += refused
        importer = session._imported_from
        if importer is not None:
            await importer.response_starts()  # the cookie store: the old data goes now
            if importer.cookie_name != self.config.cookie.name:
                # The old cookie has another name, so ours does not replace it: remove it.
                headers.append((b"set-cookie", importer.delete_cookie().encode("latin-1")))
        if private:
            headers.append((b"cache-control", b"private"))
        return message

    def _closing_store(self, send: Send) -> Send:
        async def send_closing_store(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.store.aclose()
            await send(message)

        return send_closing_store

    def _reopening_store(self, receive: Receive) -> Receive:
        async def receive_reopening_store() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.store._closed:
                # The app is started again after a shutdown (a test client used twice):
                # the store this middleware made and closed is replaced by a new one.
                self._replace_store(_default_store())
            return message

        return receive_reopening_store

    def _replace_store(self, store: Store) -> None:
        self.store = store
        self.config = replace(self.config, store=store)
        store.bind(self.config.signer)
        if self.config.telemetry is not None:
            self.config.telemetry.instrument(store)
        if self.config.events is not None:
            store.events = self.config.events


def _importers(import_from: Sequence[Importer]) -> tuple[Importer, ...]:
    importers = tuple(import_from)
    for importer in importers:
        if not isinstance(importer, Importer):
            raise ImproperlyConfigured(
                f"import_from takes importers such as FromStarlette(old_secret) or "
                f"FromStarsessions(redis_client), not {importer!r}."
            )
    return importers


def _events(events: SessionEvents | None, telemetry: Telemetry | None) -> SessionEvents | None:
    if events is not None and not isinstance(events, SessionEvents):
        raise ImproperlyConfigured(
            f"events takes a SessionEvents(on_created=..., ...) object, not {events!r}."
        )
    if telemetry is not None:
        # Lifecycle counters come from the events (a copy: the app's object is its own).
        return (events or SessionEvents()).with_listener(telemetry.record, telemetry.metering)
    return events


def _refused_old_cookies(config: SessionConfig, session: Session) -> list[tuple[bytes, bytes]]:
    """``Set-Cookie`` headers removing old cookies (named unlike ours) that imported nothing."""
    if not config.importers or not session._loaded or session._imported_from is not None:
        return []
    names = {i.cookie_name: i for i in config.importers if i.cookie_name != config.cookie.name}
    return [
        (b"set-cookie", importer.delete_cookie().encode("latin-1"))
        for name, importer in names.items()
        if cookie_values(session._headers, name.encode())
    ]


def _default_store() -> Store:
    from .stores.sqlite import SQLiteStore

    return SQLiteStore("sessions.sqlite3")


def _path_prefixes(autoload: Any) -> tuple[str, ...] | None:
    """``None`` for ``autoload=True/False``; the path prefixes for a list of them."""
    if isinstance(autoload, bool):
        return None
    if isinstance(autoload, str) or not all(
        isinstance(p, str) and p.startswith("/") for p in autoload
    ):
        raise ImproperlyConfigured(
            f"autoload must be True, False or a list of path prefixes such as "
            f"['/admin', '/auth'], not {autoload!r}."
        )
    return tuple(autoload)


def _with_vary(message: Message) -> Message:
    """A copy of the start message with ``Cookie`` in its Vary header."""
    headers = list(message.get("headers") or ())
    _vary_on_cookie(headers)
    return {**message, "headers": headers}


def _vary_on_cookie(headers: list[tuple[bytes, bytes]]) -> bool:
    """Add ``Cookie`` to the response's Vary header, once; return whether the app set no
    Cache-Control (one pass over the headers does both)."""
    vary = -1
    no_cache_control = True
    for index, (name, _) in enumerate(headers):
        if len(name) == 4 and name.lower() == b"vary":
            vary = index
        elif len(name) == 13 and name.lower() == b"cache-control":
            no_cache_control = False
    if vary < 0:
        headers.append((b"vary", b"Cookie"))
    else:
        name, value = headers[vary]
        tokens = {token.strip().lower() for token in value.split(b",")}
        if b"cookie" not in tokens and b"*" not in tokens:
            headers[vary] = (name, value + b", Cookie")
    return no_cache_control


def session_in(scope: Any, how_to_add: str) -> Session:
    """The request's (not yet loaded) session, or an error that says how to add the
    middleware (``how_to_add``: the framework's own spelling)."""
    session = scope.get("session")
    if not isinstance(session, Session):
        raise ImproperlyConfigured(
            f"No session on this request: add SessionMiddleware to the app, e.g. {how_to_add}."
        )
    return session


async def get_session(request: HTTPConnection) -> Session:
    """The loaded session: ``session: Session = Depends(get_session)`` in FastAPI."""
    return await session_in(request.scope, "app.add_middleware(SessionMiddleware, secret_key=...)")
