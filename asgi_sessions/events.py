"""Lifecycle events: app handlers told what happened to a session, after the store did it.

Names follow Spring Session's events (``SessionCreatedEvent``, ``SessionDeletedEvent``,
``SessionExpiredEvent``; ``SessionIdChangedEvent`` is our ``rotated``), plus the owner
changes (sign-in, sign-out, switch) and revocations an app audits.

An event is delivered only once the store call it reports has returned: an event never
describes a write that raised, whose outcome is unknown (``OutcomeUnknown``), that a 400
or 503 refused, or that a 5xx response skipped. Handlers run in the request's task,
before the response starts; a failing handler is logged and ignored unless
``strict=True``. Nothing here runs, and no event is built, when no handlers are given.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["EventSource", "EventType", "SessionEvent", "SessionEvents"]

logger = logging.getLogger("asgi_sessions")

EventType = Literal["created", "owner_changed", "rotated", "flushed", "revoked", "expired"]

Handler = Callable[["SessionEvent"], Awaitable[None]]

# A store method that calls another observed one (a subclass's revoke calling super())
# reports once: only the outermost call fires.
_observing: ContextVar[bool] = ContextVar("asgi_sessions_observing", default=False)

# A session loading with handlers puts a list here; a store's read that finds the record
# expired rather than missing adds the record's owner to it (read_found_expired). Stores
# call that only on their expired branch, so a live load pays nothing.
_expired_reads: ContextVar[list[str | None] | None] = ContextVar(
    "asgi_sessions_expired_reads", default=None
)


@contextmanager
def expired_reads() -> Iterator[list[str | None]]:
    """The owners of records that reads in this block found expired (an observed load)."""
    found: list[str | None] = []
    token = _expired_reads.set(found)
    try:
        yield found
    finally:
        _expired_reads.reset(token)


def read_found_expired(owner: str | None) -> None:
    """Called by a store's ``read`` that found its record expired, not missing.

    A store that can tell the two apart in the read it makes anyway (memory, SQLite,
    PostgreSQL, the cookie store) calls it; the session loading that record then fires
    ``expired``.
    """
    found = _expired_reads.get()
    if found is not None:
        found.append(owner)


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """One thing that happened to a session: never its key, only its public id."""

    type: EventType
    public_id: str | None
    """The id ``list_sessions()`` shows (``None`` on the cookie store, which has none, and
    for events about many sessions: ``revoke_all``, ``clear_expired``)."""
    owner: str | None
    """The owner after the change, as the request knows it (the revoked sessions' owner)."""
    store: str
    """The store kind: ``"memory"``, ``"sqlite"``, ``"redis"``, ``"postgres"``, ``"cookie"``."""
    timestamp: float
    """The store's clock when the store call returned (seconds since the epoch)."""
    scope: MutableMapping[str, Any] | None = None
    """The request's ASGI scope; ``None`` outside a request (``store.revoke`` from a job)."""
    previous_owner: str | None = None
    """``owner_changed``: the owner before (``None``: a sign-in)."""
    previous_public_id: str | None = None
    """``rotated``: the id the session had before the new key."""
    count: int = 1
    """How many sessions it covers (``revoked`` by ``revoke_all``, a ``clear_expired`` batch)."""
    user_agent: str | None = None
    """``created`` with an owner and ``owner_changed`` to one: the device's user agent, as
    ``list_sessions()`` shows it (for "new sign-in from Firefox on Linux" mails)."""
    ip: str | None = None
    """Likewise, its client address or network, with ``record_ip=``."""


class SessionEvents:
    """The handlers an app registers: ``SessionMiddleware(..., events=SessionEvents(...))``.

    Args:
        on_created: a new session was stored (Spring's ``SessionCreatedEvent``).
        on_owner_changed: ``session.owner`` changed and was stored: sign-in
            (``previous_owner is None``), sign-out (``owner is None``) or a switch.
        on_rotated: the session moved to a new key (``cycle_key()``, an owner change with
            ``rotate_on_owner_change``; Spring's ``SessionIdChangedEvent``).
        on_flushed: ``session.flush()`` deleted it (logout; Spring's ``SessionDeletedEvent``).
        on_revoked: ``store.revoke()`` / ``revoke_all()`` ended sessions (``count``).
        on_expired: a load or a save found the session expired (a load: on the stores
            that can tell, see the README), or ``clear_expired()`` removed a batch of
            expired records (``count``; Spring's ``SessionExpiredEvent``).
        on_event: called for every event, after the specific handler.
        strict: let a handler's exception propagate (the request fails with it) instead
            of logging it and going on.
    """

    __slots__ = ("_handled", "_handlers", "_listeners", "_wanted", "on_event", "strict")

    def __init__(
        self,
        *,
        on_created: Handler | None = None,
        on_owner_changed: Handler | None = None,
        on_rotated: Handler | None = None,
        on_flushed: Handler | None = None,
        on_revoked: Handler | None = None,
        on_expired: Handler | None = None,
        on_event: Handler | None = None,
        strict: bool = False,
    ) -> None:
        self._handlers: dict[str, Handler | None] = {
            "created": on_created,
            "owner_changed": on_owner_changed,
            "rotated": on_rotated,
            "flushed": on_flushed,
            "revoked": on_revoked,
            "expired": on_expired,
        }
        self._handled = any(handler is not None for handler in self._handlers.values())
        self.on_event = on_event
        self.strict = strict
        self._listeners: tuple[Handler, ...] = ()
        self._wanted: tuple[Callable[[], bool], ...] = ()

    def with_listener(self, listener: Handler, wanted: Callable[[], bool]) -> SessionEvents:
        """A copy that also calls ``listener`` for every event (telemetry's counters).

        ``wanted()`` says whether the listener cares now (telemetry: only once metrics
        record); a request starts observing only if a handler or a listener does.
        """
        copy = SessionEvents(on_event=self.on_event, strict=self.strict)
        copy._handlers = dict(self._handlers)
        copy._handled = self._handled
        copy._listeners = (*self._listeners, listener)
        copy._wanted = (*self._wanted, wanted)
        return copy

    def listening(self) -> bool:
        """Whether an event now would reach a handler or a listener that wants it.

        The middleware asks at the start of each request, and every listener is asked
        each time (telemetry then looks for an OpenTelemetry SDK set up since).
        """
        listening = self._handled or self.on_event is not None
        for wanted in self._wanted:
            listening = wanted() or listening
        return listening

    async def emit(self, event: SessionEvent) -> None:
        """Run the handlers for ``event`` (a failing one is logged unless ``strict``)."""
        for handler in (self._handlers[event.type], self.on_event):
            if handler is None:
                continue
            try:
                await handler(event)
            except Exception:
                if self.strict:
                    raise
                logger.exception("Session event handler %r failed on %r.", handler, event.type)
        for listener in self._listeners:
            await listener(event)


class EventSource(Protocol):
    """What an event reads of a store: its handlers and its clock (every ``Store`` is one).

    A protocol, so that stores import this module and never the other way round; a
    request's side of events, which loads through a store, is :mod:`asgi_sessions.observer`.
    """

    events: SessionEvents | None
    clock: Callable[[], float]


def store_kind(store: object) -> str:
    """``RedisStore`` -> ``"redis"``: the name events and metrics give a store."""
    name = type(store).__name__.lower()
    return name[:-5] if name.endswith("store") and len(name) > 5 else name


async def store_event(
    store: EventSource, kind: EventType, owner: str | None, public_id: str | None, count: int
) -> None:
    """Fire an event of a store call made outside any session (revoke, clear_expired)."""
    events = store.events
    if events is None or count <= 0:
        return
    await events.emit(
        SessionEvent(kind, public_id, owner, store_kind(store), store.clock(), count=count)
    )


def observed(method: Callable[..., Awaitable[int]], kind: EventType) -> Any:
    """Wrap a store's ``revoke`` / ``revoke_all`` so that what it ended fires ``revoked``."""

    @functools.wraps(method)
    async def wrapper(self: EventSource, owner: str, *args: Any, **kw: Any) -> int:
        if self.events is None or _observing.get():
            return await method(self, owner, *args, **kw)
        token = _observing.set(True)
        try:
            count = await method(self, owner, *args, **kw)
        finally:
            _observing.reset(token)
        one = method.__name__ == "revoke"
        public_id = (args[0] if args else kw.get("public_id")) if one else None
        await store_event(self, kind, owner, public_id, count)
        return count

    return wrapper
