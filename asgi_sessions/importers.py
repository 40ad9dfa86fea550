"""Importers: switch from another session library without signing anyone out.

``SessionMiddleware(..., import_from=[FromStarlette("old-secret")])``: a request that
carries no session of ours but a valid session of the old library has that session's data
moved into our store under a new key; the response sets our cookie and removes the old
one. Keep an importer on for one of the old library's ``max_age`` (14 days by default):
by then every old cookie has either come back once or expired.

Each old session is imported at most once. Its new key is derived from the old cookie with
an HMAC of our secret, so two concurrent first requests end with the same new session;
and a marker record, kept as long as the old cookie could still be valid, stops a copy of
the old cookie from importing it again after the user logged out.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .cookies import cookie_values
from .errors import KeyCollision, MissingDependency
from .stores.base import SessionWrite, StoredSession

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .session import SessionConfig

logger = logging.getLogger("asgi_sessions")

__all__ = ["FromStarlette", "FromStarsessions", "Imported", "Importer"]

_FOURTEEN_DAYS = 14 * 24 * 60 * 60
_STARSESSIONS_ID = re.compile(r"[0-9a-f]{16,128}\Z")
_EPOCH = "expires=Thu, 01 Jan 1970 00:00:00 GMT"


@dataclass(frozen=True, slots=True)
class Imported:
    """An old session an importer verified, ready to move into our store."""

    data: dict[str, Any]
    token: str
    """Identifies the old session (its cookie value): the same token imports once."""
    expires_at: float
    """When the old session would have ended: the import marker lives until then."""


@runtime_checkable
class Importer(Protocol):
    """Reads one old library's sessions. ``cookie_name`` is the old cookie's name."""

    cookie_name: str

    def token(self, value: str) -> str | None:
        """A stable identity for cookie ``value`` if it can be one of the old library's
        (checked without I/O: a signature, a format), else ``None``."""
        ...

    async def take(self, value: str) -> Imported | None:
        """The old session behind cookie ``value``, or ``None`` if it is not a valid one.

        Must never vouch for a session the old library does not hold, and may remove it
        from the old store (it is ours from now on).
        """
        ...

    def delete_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the old cookie from the browser."""
        ...


def _deleting(name: str, path: str, domain: str | None) -> str:
    where = f"; domain={domain}" if domain else ""
    return f'{name}=""; path={path}; Max-Age=0; {_EPOCH}{where}'


class FromStarlette:
    """Sessions of ``starlette.middleware.sessions.SessionMiddleware``: data in a cookie
    signed with itsdangerous' ``TimestampSigner`` over base64 JSON.

    Args:
        secret_key: the old middleware's ``secret_key``.
        session_cookie, max_age, path, domain: the old middleware's settings.
    """

    def __init__(
        self,
        secret_key: str,
        *,
        session_cookie: str = "session",
        max_age: int | None = _FOURTEEN_DAYS,
        path: str = "/",
        domain: str | None = None,
    ) -> None:
        try:
            import itsdangerous
        except ImportError:  # pragma: no cover - Starlette's sessions need it too
            raise MissingDependency("starlette-import", "itsdangerous") from None
        self.cookie_name = session_cookie
        self.max_age = max_age
        self._signer = itsdangerous.TimestampSigner(str(secret_key))
        self._bad_signature = itsdangerous.BadSignature
        self._delete = _deleting(session_cookie, path, domain)

    def __repr__(self) -> str:
        return f"FromStarlette(session_cookie={self.cookie_name!r}, max_age={self.max_age!r})"

    def token(self, value: str) -> str | None:
        """The cookie itself, if Starlette's signature on it holds and it is not too old."""
        try:
            self._signer.unsign(value.encode("latin-1"), max_age=self.max_age)
        except (self._bad_signature, UnicodeEncodeError):
            return None
        return f"starlette:{value}"

    async def take(self, value: str) -> Imported | None:
        """The data Starlette's cookie carries (it stays in the browser until replaced)."""
        try:
            payload, signed_at = self._signer.unsign(
                value.encode("latin-1"), max_age=self.max_age, return_timestamp=True
            )
            data = json.loads(base64.b64decode(payload))
        except (self._bad_signature, ValueError, binascii.Error, UnicodeEncodeError):
            return None  # not Starlette's, tampered with, or expired
        if not isinstance(data, dict) or not data:
            return None
        lifetime = self.max_age if self.max_age is not None else _FOURTEEN_DAYS
        return Imported(
            data=data, token=f"starlette:{value}", expires_at=signed_at.timestamp() + lifetime
        )

    def delete_cookie(self) -> str:
        """Removes Starlette's cookie (when its name is not ours)."""
        return self._delete


class FromStarsessions:
    """Sessions of starsessions' ``RedisStore``: the cookie names a Redis key (``prefix`` +
    id) holding the session as JSON. The old record is removed as it is imported (one
    ``GETDEL``), so only one request can take it.

    Args:
        client: a ``redis.asyncio.Redis`` reaching starsessions' server (left open).
        prefix: starsessions' key prefix (``"starsessions."`` by default).
        cookie_name, cookie_path, cookie_domain: starsessions' cookie settings.
    """

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str = "starsessions.",
        cookie_name: str = "session",
        cookie_path: str = "/",
        cookie_domain: str | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.cookie_name = cookie_name
        self._delete = _deleting(cookie_name, cookie_path, cookie_domain)

    def __repr__(self) -> str:
        return f"FromStarsessions(prefix={self.prefix!r}, cookie_name={self.cookie_name!r})"

    def token(self, value: str) -> str | None:
        """The id, if it has the form of starsessions' ids."""
        # starsessions' ids are secrets.token_hex(16); anything else is not one of them,
        # and costs no lookup.
        return f"starsessions:{value}" if _STARSESSIONS_ID.match(value) else None

    async def take(self, value: str) -> Imported | None:
        """Remove the old record and return its data (``None`` if the store lacks it)."""
        from .stores.redis import _import_redis

        redis = _import_redis()
        if self.token(value) is None:
            return None
        try:
            raw = await self.client.getdel(self.prefix + value)
        except (redis.exceptions.RedisError, OSError) as exc:
            from .errors import SessionStoreError

            raise SessionStoreError(
                f"Reading the starsessions session to import failed ({type(exc).__name__}). "
                "Check the Redis client given to FromStarsessions."
            ) from exc
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        meta = data.pop("__metadata__", None)
        expires_at = time.time() + _FOURTEEN_DAYS
        if isinstance(meta, dict):
            created, lifetime = meta.get("created"), meta.get("lifetime")
            if isinstance(created, int | float) and isinstance(lifetime, int) and lifetime > 0:
                expires_at = float(created) + lifetime
        if not data:
            return None
        return Imported(data=data, token=f"starsessions:{value}", expires_at=expires_at)

    def delete_cookie(self) -> str:
        """Removes starsessions' cookie (when its name is not ours)."""
        return self._delete


def derived_key(secret: bytes, purpose: str, token: str) -> str:
    """A session key derived from an old session's token: the same for every request
    carrying it, unguessable without our secret."""
    digest = hmac.new(secret, f"{purpose}\x00{token}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


async def import_session(
    config: SessionConfig, headers: Iterable[tuple[bytes, bytes]]
) -> tuple[str, StoredSession, Importer] | None:
    """Move the first valid old session the request carries into our store (at most once
    per old session); return its new key, its record and the importer that found it."""
    store = config.store
    secret = config.signer.derive(b"asgi_sessions.import")[0]
    for importer in config.importers:
        for value in cookie_values(headers, importer.cookie_name.encode()):
            token = importer.token(value)
            if token is None:
                continue
            if store.keeps_data_in_cookie:
                imported = await importer.take(value)
                if imported is not None:
                    created = await _create(config, None, imported)
                    if created is not None:
                        return (*created, importer)
                continue
            key = derived_key(secret, "import", token)
            imported = await importer.take(value)
            if imported is not None and await _mark_imported(config, secret, imported):
                created = await _create(config, key, imported)
                if created is not None:
                    return (*created, importer)
            # Imported before: by a concurrent request (the same new session, then), or
            # long ago and since logged out (then the key is gone and nothing comes back).
            record = await store.load(key)
            if record is not None:
                return key, record, importer
    return None


def _write(
    config: SessionConfig, data: dict[str, str], ends: float, full: dict[str, Any] | None = None
) -> SessionWrite:
    now = config.store.clock()
    return SessionWrite(
        set=data,
        deleted=frozenset(),
        replace=False,
        create=True,
        now=now,
        default_expires_at=ends,
        expires_cap=None,
        created_at=now,
        full_data=full or {},
    )


async def _mark_imported(config: SessionConfig, secret: bytes, imported: Imported) -> bool:
    """Record that this old session was imported, until it would have expired anyway;
    ``False`` if it already was."""
    marker = derived_key(secret, "import-marker", imported.token)
    change = _write(config, {"_imported": "true"}, imported.expires_at)
    try:
        await config.store.save(marker, change)
    except KeyCollision:
        return False
    return True


async def _create(
    config: SessionConfig, key: str | None, imported: Imported
) -> tuple[str, StoredSession] | None:
    dumps = config.serializer.dumps
    try:
        data = {name: dumps(value) for name, value in imported.data.items()}
    except (TypeError, ValueError) as exc:
        logger.warning("An old session could not be imported: %s", exc)
        return None
    now = config.store.clock()
    change = _write(config, data, now + config.default_age, imported.data)
    if key is None:
        saved = await config.store.create(change)  # the cookie store: the data is the key
    else:
        try:
            saved = await config.store.save(key, change)
        except KeyCollision:
            return None  # created by a concurrent request: the caller loads it
    record = StoredSession(data=data, expires_at=saved.expires_at, created_at=now, updated_at=now)
    if config.store.keeps_data_in_cookie:
        record.decoded = dict(imported.data)
    return saved.key, record
