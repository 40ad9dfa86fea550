"""Exceptions raised by asgi_sessions.

The tree::

    SessionError
    ├── SessionNotLoaded (RuntimeError)     data touched before ``await request.state.session``
    ├── ImproperlyConfigured (ValueError)   a bad option or URL, raised at start-up
    ├── SessionStoreError                   the store failed (Redis down, disk full, ...)
    │   └── OutcomeUnknown                  a write under a new key may or may not have happened
    ├── SessionInterrupted                  the record was deleted by a concurrent request
    ├── SessionTooLarge                     a cookie would pass the browser's 4096-byte limit
    ├── StoreCapabilityError                the store cannot do this (e.g. revoke a cookie)
    └── KeyCollision                        a new key already exists (stores retry with another)

    MissingDependency (ImportError)         an optional extra is not installed
"""

from __future__ import annotations

__all__ = [
    "ImproperlyConfigured",
    "KeyCollision",
    "MissingDependency",
    "OutcomeUnknown",
    "SessionError",
    "SessionInterrupted",
    "SessionNotLoaded",
    "SessionStoreError",
    "SessionTooLarge",
    "StoreCapabilityError",
]


class SessionError(Exception):
    """Base class of every error this library raises on purpose."""


class SessionNotLoaded(SessionError, RuntimeError):
    """The session's data was used before the session was loaded."""

    def __init__(self, operation: str = "access") -> None:
        super().__init__(
            f"The session is not loaded yet, so {operation} is not possible. In an async "
            "view, load it first: `session = await request.state.session` (or "
            "`Depends(get_session)` in FastAPI). Code that reads `request.session` "
            "synchronously (a sync view, Authlib, sqladmin, starlette-admin) needs "
            "`autoload=True` on SessionMiddleware, or `autoload=['/admin', ...]` for just "
            "the paths that need it."
        )


class ImproperlyConfigured(SessionError, ValueError):
    """An option, URL or cookie setting cannot work; raised when the app starts."""


class SessionStoreError(SessionError):
    """The store could not load, save or delete a session.

    The request that needed the session fails (a 5xx); the user's cookie is left alone so
    the session is still there when the store comes back.
    """


class OutcomeUnknown(SessionStoreError):
    """A write under a new key (a create, a rotation) failed in a way that may have applied.

    A lost reply, a timeout, ``WAIT`` failing after the write, a connection dropped after
    ``COMMIT``: the store cannot tell. ``attempted_key`` is the key the write used, so
    the response can hand the client a cookie that works whichever way it went. The key
    is an attribute only: it is never part of the message (logs print the message).
    """

    def __init__(self, *args: object, attempted_key: str) -> None:
        super().__init__(*args)
        self.attempted_key = attempted_key


class SessionInterrupted(SessionError):
    """The session was deleted by another request (a logout, say) while this one ran."""

    def __init__(self) -> None:
        super().__init__(
            "The request's session was deleted before the request completed. "
            "The user may have logged out in a concurrent request, for example."
        )


class SessionTooLarge(SessionError):
    """A cookie-held session grew past what a browser keeps (4096 bytes)."""


class StoreCapabilityError(SessionError):
    """The store cannot do what was asked (for example list a cookie store's sessions)."""


class KeyCollision(SessionError):
    """A store was asked to create a record under a key that already exists."""


DISTRIBUTION = "asgi-server-sessions"
"""The name to ``pip install`` (the import name stays ``asgi_sessions``)."""


class MissingDependency(ImportError):
    """An optional dependency is missing; the message is the command that installs it."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"{module!r} is not installed. Install it with: pip install '{DISTRIBUTION}[{extra}]'"
        )
