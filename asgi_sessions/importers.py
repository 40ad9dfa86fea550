"""Importers: switch from another session library without signing anyone out.

``SessionMiddleware(..., import_from=[FromStarlette("old-secret")])``: a request that
carries no session of ours but a valid session of the old library has that session's data
moved into our store under a new key; the response sets our cookie and removes the old
one. Keep an importer on for one of the old library's ``max_age`` (14 days by default):
by then every old cookie has either come back once or expired.

The rules (each one closes a hole a copy of the old cookie could open):

- **Imported once.** On a server store the new key ``K`` is derived from the old cookie
  with an HMAC of our secret, and a marker record, kept for exactly as long as the
  importer would accept that cookie, records that the import happened. A copy of the old
  cookie replayed after a logout finds the marker and ``K`` gone: a fresh session.
- **Released last.** The old session is only *read* first; ``K`` is created, then the
  marker written, and only then is the old data released (starsessions: its record
  deleted). A store failure at any step answers 503 with the old data still in place,
  and a retry converges on the same ``K``.
- **A short window.** A request carrying the old cookie reaches an existing ``K`` only
  while nothing was saved to it since the import and for :data:`IMPORT_WINDOW` seconds
  after it (concurrent first requests, a retried request); otherwise it gets a fresh
  session and the old cookie is removed.
- **Retired on first use.** ``K`` ends with ``:``, which random keys never contain. The
  first request that comes back with our cookie naming ``K`` moves the session to a
  random key (as ``cycle_key()`` does), so a copy of the old cookie that reached ``K``
  inside the window is dead after the user's next request.
- The cookie store has no server-side record to derive or mark: the import happens as
  the response sets our cookie, and the old data is released only when that response
  starts with a status below 500.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from .cookies import Signer, b64url_encode, cookie_values
from .errors import KeyCollision, MissingDependency, SessionStoreError
from .serializers import Serializer
from .stores.base import SessionWrite, Store, StoredSession

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("asgi_sessions")

__all__ = ["IMPORT_WINDOW", "FromStarlette", "FromStarsessions", "Imported", "Importer"]

#: Seconds after an import during which a request with the old cookie still reaches the
#: new session, provided nothing was saved to it since (concurrent first requests, a
#: request retried after a 503).
IMPORT_WINDOW: Final = 30
#: The last character of a key derived from an old cookie; random keys never contain it.
DERIVED_KEY_MARK: Final = ":"
#: Starlette's ``max_age=None`` sets no bound on a cookie's age: ``FromStarlette`` then
#: accepts cookies signed at most this long ago (``browser_session_limit``).
BROWSER_SESSION_LIMIT: Final = 14 * 24 * 60 * 60

_FOURTEEN_DAYS = 14 * 24 * 60 * 60
_STARSESSIONS_ID = re.compile(r"[0-9a-f]{16,128}\Z")
_EPOCH = "expires=Thu, 01 Jan 1970 00:00:00 GMT"
# The import writes K as if a millisecond before its creation, so "nothing was saved to
# it since" is ``updated_at < created_at``: any later write, even in the same clock tick,
# moves updated_at to or past created_at.
_UNTOUCHED = 0.001


@dataclass(frozen=True, slots=True)
class Imported:
    """An old session an importer verified, ready to move into our store."""

    data: dict[str, Any]
    token: str
    """Identifies the old session (its cookie value): the same token imports once."""
    expires_at: float
    """Until when the importer would accept the old cookie: the import marker lives until
    then."""


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

        Must never vouch for a session the old library does not hold, and must not remove
        it: :meth:`release` does that once the new session is durable.
        """
        ...

    async def release(self, value: str) -> None:
        """Remove the old session behind ``value`` (it is ours now); safe to repeat."""
        ...

    def delete_cookie(self) -> str:
        """The ``Set-Cookie`` value that removes the old cookie from the browser."""
        ...


class ImportSettings(Protocol):
    """What an import reads of the middleware's settings (``SessionConfig`` has it all).

    The session calls :func:`import_session` with its config; this module never imports
    the session, so the dependency runs one way.
    """

    @property
    def store(self) -> Store: ...
    @property
    def signer(self) -> Signer: ...
    @property
    def serializer(self) -> Serializer: ...
    @property
    def importers(self) -> tuple[Importer, ...]: ...
    @property
    def default_age(self) -> int: ...
    @property
    def absolute_timeout(self) -> int | None: ...


def _deleting(name: str, path: str, domain: str | None) -> str:
    where = f"; domain={domain}" if domain else ""
    return f'{name}=""; path={path}; Max-Age=0; {_EPOCH}{where}'


class FromStarlette:
    """Sessions of ``starlette.middleware.sessions.SessionMiddleware``: data in a cookie
    signed with itsdangerous' ``TimestampSigner`` over base64 JSON.

    Args:
        secret_key: the old middleware's ``secret_key``.
        session_cookie, max_age, path, domain: the old middleware's settings.
        browser_session_limit: with ``max_age=None`` (Starlette's browser-session
            cookie, which carries no bound), accept cookies signed at most this many
            seconds ago (14 days); older ones import nothing.
        clock: the time in seconds since the epoch (``time.time``; tests move it).
    """

    def __init__(
        self,
        secret_key: str,
        *,
        session_cookie: str = "session",
        max_age: int | None = _FOURTEEN_DAYS,
        path: str = "/",
        domain: str | None = None,
        browser_session_limit: int = BROWSER_SESSION_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        try:
            import itsdangerous
        except ImportError:  # pragma: no cover - Starlette's sessions need it too
            raise MissingDependency("starlette-import", "itsdangerous") from None

        class Signer(itsdangerous.TimestampSigner):
            def get_timestamp(self) -> int:
                return int(clock())

        self.cookie_name = session_cookie
        self.max_age = max_age
        self.accepts_for = browser_session_limit if max_age is None else max_age
        """How old a cookie may be (seconds since it was signed) to be imported."""
        self._signer = Signer(str(secret_key))
        self._bad_signature = itsdangerous.BadSignature
        self._delete = _deleting(session_cookie, path, domain)

    def __repr__(self) -> str:
        return f"FromStarlette(session_cookie={self.cookie_name!r}, max_age={self.max_age!r})"

    def token(self, value: str) -> str | None:
        """The cookie itself, if Starlette's signature on it holds and it is not too old."""
        try:
            self._signer.unsign(value.encode("latin-1"), max_age=self.accepts_for)
        except (self._bad_signature, UnicodeEncodeError):
            return None
        return f"starlette:{value}"

    async def take(self, value: str) -> Imported | None:
        """The data Starlette's cookie carries (it stays in the browser until replaced)."""
        try:
            payload, signed_at = self._signer.unsign(
                value.encode("latin-1"), max_age=self.accepts_for, return_timestamp=True
            )
            data = json.loads(base64.b64decode(payload))
        except (self._bad_signature, ValueError, binascii.Error, UnicodeEncodeError):
            return None  # not Starlette's, tampered with, or too old
        if not isinstance(data, dict) or not data:
            return None
        # Accepted while its age is at most accepts_for whole seconds: one second more.
        ends = signed_at.timestamp() + self.accepts_for + 1
        return Imported(data=data, token=f"starlette:{value}", expires_at=ends)

    async def release(self, value: str) -> None:
        """Nothing to remove: Starlette's session lives in the cookie, which we replace."""

    def delete_cookie(self) -> str:
        """Removes Starlette's cookie (when its name is not ours)."""
        return self._delete


class FromStarsessions:
    """Sessions of starsessions' ``RedisStore``: the cookie names a Redis key (``prefix`` +
    id) holding the session as JSON. The old record is read at import and deleted only
    once the new session is stored.

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
        """The old record's data (``None`` if the store lacks it); the record stays."""
        if self.token(value) is None:
            return None
        raw = await self._call("Reading", self.client.get(self.prefix + value))
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

    async def release(self, value: str) -> None:
        """Delete the old record (a missing one is fine)."""
        if self.token(value) is not None:
            await self._call("Deleting", self.client.delete(self.prefix + value))

    @staticmethod
    async def _call(verb: str, pending: Any) -> Any:
        from .stores.redis_io import import_redis  # only FromStarsessions needs redis

        redis = import_redis()
        try:
            return await pending
        except (redis.exceptions.RedisError, OSError) as exc:
            raise SessionStoreError(
                f"{verb} the starsessions session to import failed ({type(exc).__name__}). "
                "Check the Redis client given to FromStarsessions."
            ) from exc

    def delete_cookie(self) -> str:
        """Removes starsessions' cookie (when its name is not ours)."""
        return self._delete


@dataclass(slots=True)
class OldCookie:
    """The old library's cookie a request carried: the response removes it, and on the
    cookie store releases the old data as our cookie goes out."""

    importer: Importer
    value: str
    release_on_response: bool = False

    @property
    def cookie_name(self) -> str:
        return self.importer.cookie_name

    def delete_cookie(self) -> str:
        return self.importer.delete_cookie()

    async def response_starts(self) -> None:
        """Called as a response below 500 starts (our cookie set, or the session flushed)."""
        if self.release_on_response:
            await self.importer.release(self.value)
            self.release_on_response = False


Found = tuple[str | None, StoredSession | None, OldCookie]
"""(new key, its record, the old cookie); no key: a fresh session, the old cookie removed."""


def derived_key(secret: bytes, purpose: str, token: str) -> str:
    """A session key derived from an old session's token: the same for every request
    carrying it, unguessable without our secret, and marked as derived (see
    :func:`is_derived`)."""
    digest = hmac.new(secret, f"{purpose}\x00{token}".encode(), hashlib.sha256).digest()
    key = b64url_encode(digest).decode()
    if key[0] == "-":
        key = "_" + key[1:]  # a shell would take `show URL -...` for an option
    return key + DERIVED_KEY_MARK


def is_derived(session_key: str) -> bool:
    """Whether ``session_key`` was derived from an old cookie (random keys never are)."""
    return session_key[-1:] == DERIVED_KEY_MARK


async def import_session(
    config: ImportSettings, headers: Iterable[tuple[bytes, bytes]]
) -> Found | None:
    """Move the first valid old session the request carries into our store (at most once
    per old session); ``None`` if the request carries no old cookie to act on."""
    store = config.store
    secret = config.signer.derive(b"asgi_sessions.import")[0]
    spent: Found | None = None
    for importer in config.importers:
        for value in cookie_values(headers, importer.cookie_name.encode()):
            token = importer.token(value)
            if token is None:
                continue
            imported = await importer.take(value)  # read only: released last
            old = OldCookie(importer, value)
            if imported is not None and _encoded(config, imported) is None:
                continue  # its data cannot be stored: nothing to import
            if store.keeps_data_in_cookie:
                created = await _create(config, None, imported) if imported else None
                if created is not None:  # the cookie store mints its key: never a collision
                    old.release_on_response = True
                    return (*created, old)
                continue
            found = await _import_once(config, secret, token, imported, old)
            if found is not None and found[0] is not None:
                return found
            spent = spent or found
    return spent


async def _import_once(
    config: ImportSettings, secret: bytes, token: str, imported: Imported | None, old: OldCookie
) -> Found | None:
    """A server store: create K, mark the import, release the old data; or, imported
    before, reach K inside the window. Any store failure leaves the old data in place."""
    store = config.store
    key = derived_key(secret, "import", token)
    marker = derived_key(secret, "import-marker", token)
    marked = await store.load(marker)
    created_here = False
    if marked is None:
        if imported is None:
            return None  # nothing vouches for it, and it was never imported
        created = await _create(config, key, imported)
        created_here = created is not None
        record = created[1] if created is not None else await store.load(key)
        if record is None:
            return None, None, old  # K vanished at once: imported before, and ended
        if await _mark(config, marker, imported, record.expires_at):
            if record.updated_at >= record.created_at:
                return None, None, old  # handed out and written once (marker expired)
            # The marker was missing and K is untouched: nobody was ever handed K.
            await old.importer.release(old.value)
            return key, record, old
        marked = await store.load(marker)  # marked meanwhile: by a concurrent request?
        if marked is None:
            return None, None, old
    # Imported before: K is reachable only untouched, inside the window, and if it is the
    # K the marker was written for (not one re-created after a logout).
    record = await store.load(key)
    now = store.clock()
    if (
        record is None
        or record.updated_at >= record.created_at
        or now - record.created_at >= IMPORT_WINDOW
        or record.created_at > marked.created_at
    ):
        if created_here and record is not None and record.created_at > marked.created_at:
            # Ours, made after a concurrent request's import had already ended its K (a
            # cycle_key, a logout): this same rule keeps every other request from it, so
            # nobody was handed it, and nobody may be.
            await store.delete(key)
        return None, None, old
    if imported is not None:
        await old.importer.release(old.value)  # completes an import whose release failed
    return key, record, old


def _write(
    config: ImportSettings, data: dict[str, str], ends: float, full: dict[str, Any] | None = None
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


async def _mark(config: ImportSettings, marker: str, imported: Imported, k_ends: float) -> bool:
    """Record that this old session was imported, for as long as its cookie would be
    accepted, and never less long than K itself lives untouched; ``False`` if it already
    was."""
    ends = max(imported.expires_at, k_ends)
    try:
        await config.store.save(marker, _write(config, {"_imported": "true"}, ends))
    except KeyCollision:
        return False
    return True


def _encoded(config: ImportSettings, imported: Imported) -> dict[str, str] | None:
    dumps = config.serializer.dumps
    try:
        return {name: dumps(value) for name, value in imported.data.items()}
    except (TypeError, ValueError) as exc:
        logger.warning("An old session could not be imported: %s", exc)
        return None


async def _create(
    config: ImportSettings, key: str | None, imported: Imported
) -> tuple[str, StoredSession] | None:
    """Store the imported data under ``key`` (the cookie store: a key minted from it);
    ``None`` if ``key`` exists already."""
    data = _encoded(config, imported) or {}
    change = _write(config, data, 0.0, imported.data)
    now = change.now
    change.default_expires_at = now + config.default_age
    if config.absolute_timeout is not None:
        change.expires_cap = now + config.absolute_timeout
    if key is None:
        saved = await config.store.create(change)  # the cookie store: the data is the key
        updated = now
    else:
        change.now = updated = now - _UNTOUCHED  # see _UNTOUCHED
        try:
            saved = await config.store.save(key, change)
        except KeyCollision:
            return None  # created by a concurrent request: the caller loads it
    record = StoredSession(
        data=data, expires_at=saved.expires_at, created_at=now, updated_at=updated
    )
    if config.store.keeps_data_in_cookie:
        record.decoded = dict(imported.data)
    return saved.key, record
