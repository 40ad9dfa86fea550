"""Session stores, and :func:`store_from_url` to pick one from configuration."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..errors import ImproperlyConfigured
from ..redaction import redact_url
from .base import OwnedSession, SessionRecord, SessionWrite, Store, StoredSession, StoreStats
from .memory import MemoryStore

if TYPE_CHECKING:
    from .cookie import CookieStore
    from .postgres import PostgresStore
    from .redis import RedisStore
    from .sqlite import SQLiteStore

__all__ = [
    "CookieStore",
    "MemoryStore",
    "OwnedSession",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "SessionRecord",
    "SessionWrite",
    "Store",
    "StoreStats",
    "StoredSession",
    "store_from_url",
]

_SCHEMES = "memory://, sqlite:///relative/path.sqlite3, sqlite:////absolute/path.sqlite3, "
_SCHEMES += "redis://host:port/db, rediss://host:port/db, redis+cluster://host:port, "
_SCHEMES += "redis+sentinel://host:port[,host:port]/service[/db], "
_SCHEMES += "postgresql://user:password@host:port/database (or postgres://), cookie://"
_REDIS_TOPOLOGIES = ("redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


def store_from_url(url: str, **options: Any) -> Store:
    """Build a store from a URL such as ``sqlite:///sessions.sqlite3`` or ``redis://localhost``.

    Extra keyword options go to the store's constructor.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    shown = redact_url(url)
    if scheme == "memory":
        return MemoryStore(**options)
    if scheme == "sqlite":
        from .sqlite import SQLiteStore

        # As in SQLAlchemy: sqlite:///relative.db, sqlite:////absolute/path.db
        path = url[len("sqlite:///") :] if url.lower().startswith("sqlite:///") else ""
        if not path:
            raise ImproperlyConfigured(
                f"The SQLite URL {shown!r} names no file. Use sqlite:///sessions.sqlite3 "
                "(relative) or sqlite:////var/lib/app/sessions.sqlite3 (absolute)."
            )
        return SQLiteStore(path, **options)
    if scheme in ("redis", "rediss"):
        from .redis import RedisStore

        try:
            host = urlsplit(url).hostname
        except ValueError as exc:  # e.g. an unclosed IPv6 bracket
            raise ImproperlyConfigured(f"Invalid Redis URL {shown!r}: {exc}.") from exc
        if not host:
            raise ImproperlyConfigured(
                f"The Redis URL {shown!r} names no host. Use redis://localhost:6379/0."
            )
        return RedisStore.from_url(url, **options)
    if scheme in _REDIS_TOPOLOGIES:
        from .redis import RedisStore
        from .redis_url import parse_redis_url

        parse_redis_url(url)  # a mistake is an ImproperlyConfigured naming it, at start-up
        return RedisStore.from_url(url, **options)
    if scheme in ("postgresql", "postgres"):
        from .postgres import PostgresStore

        return PostgresStore.from_url(url, **options)
    if scheme == "cookie":
        from .cookie import CookieStore

        return CookieStore(**options)
    raise ImproperlyConfigured(f"Unsupported session store URL {shown!r}. Use one of: {_SCHEMES}.")


def __getattr__(name: str) -> Any:
    # Optional backends are imported on first use, so `import asgi_sessions` never needs
    # redis, asyncpg or cryptography.
    if name == "SQLiteStore":
        from .sqlite import SQLiteStore

        return SQLiteStore
    if name == "RedisStore":
        from .redis import RedisStore

        return RedisStore
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    if name == "CookieStore":
        from .cookie import CookieStore

        return CookieStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
