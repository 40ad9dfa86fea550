"""Server-side sessions for ASGI apps, in the style of Django's sessions framework.

>>> from asgi_sessions import SessionMiddleware, SQLiteStore
>>> # app.add_middleware(SessionMiddleware, secret_key=SECRET, store=SQLiteStore("s.sqlite3"))
>>> # session = await request.state.session
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import (
    ImproperlyConfigured,
    MissingDependency,
    SessionError,
    SessionInterrupted,
    SessionNotLoaded,
    SessionStoreError,
    SessionTooLarge,
    StoreCapabilityError,
)
from .events import SessionEvent, SessionEvents
from .importers import FromStarlette, FromStarsessions
from .middleware import SessionMiddleware, get_session
from .serializers import JSONSerializer, Serializer
from .session import Session
from .stores import MemoryStore, OwnedSession, SessionRecord, Store, StoreStats, store_from_url

if TYPE_CHECKING:
    from .stores.cookie import CookieStore
    from .stores.postgres import PostgresStore
    from .stores.redis import RedisStore
    from .stores.sqlite import SQLiteStore

__all__ = [
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


def __getattr__(name: str) -> Any:
    # Store backends with optional dependencies load on first use.
    if name in ("SQLiteStore", "RedisStore", "PostgresStore", "CookieStore"):
        from . import stores

        return getattr(stores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
