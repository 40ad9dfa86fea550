"""Session: a lazily loaded, change-tracking ``dict`` bound to one request."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from .cookies import CookieSettings, Signer, VerifiedCookies, cookie_values
from .errors import KeyCollision
from .expiry import encode_expiry, ends_with_browser, expires_at
from .serializers import Serializer
from .stores.base import SessionWrite, Store, StoredSession, hash_key, public_id_for
from .tracking import Stored, TrackedDict

__all__ = ["DEFAULT_MAX_AGE", "Session", "SessionConfig"]

logger = logging.getLogger("asgi_sessions")

#: Fourteen days, as in Django and Starlette.
DEFAULT_MAX_AGE: Final = 14 * 24 * 60 * 60

# 32 bytes from secrets: 256 bits, well past OWASP's 64 and ASVS 5's 128.
_KEY_BYTES = 32
_CREATE_ATTEMPTS = 5
_MISSING: Any = object()
_LOADING = object()  # a load is in progress and nobody is waiting for it yet


@dataclass(slots=True, frozen=True)
class SessionConfig:
    """What every session of one middleware shares; built once at start-up."""

    store: Store
    signer: Signer
    serializer: Serializer
    cookie: CookieSettings
    max_age: int | None
    absolute_timeout: int | None = None
    verified: VerifiedCookies | None = None
    """Signatures already checked; ``None`` when the cookie carries data (CookieStore)."""


def short_hash(session_key: str) -> str:
    """A log-safe handle for a key: 12 hex characters of the stored hash."""
    return hash_key(session_key)[:12]


class Session(TrackedDict):
    """A ``dict`` of the request's session data that knows what changed.

    Await it (``session = await request.state.session``) before touching the data; it is
    loaded from the store at most once. Only top-level changes are tracked: after mutating
    a nested value in place, set ``session.modified = True``.
    """

    __slots__ = (
        "_config",
        "_cookie_key",
        "_created_at",
        "_expiry",
        "_headers",
        "_key",
        "_loading",
        "_meta_changed",
        "_owner",
        "_written",
    )

    def __init__(self, config: SessionConfig, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
        # No I/O and no cookie parsing here: a request that never awaits the session
        # pays only for this constructor.
        # TrackedDict's state, set here rather than through its __init__: one call fewer
        # on every request.
        self._loaded = False
        self.accessed = False
        self._modified = False
        self._config = config
        self._headers = headers
        self._loading: asyncio.Future[None] | object | None = None
        self._cookie_key: str | object | None = _MISSING
        self._key: str | None = None
        # The rest of the state is set by _start_tracking(), once the session is loaded.

    def _start_tracking(self) -> None:
        self._reset_changes()
        self._meta_changed = False
        self._written = False
        self._created_at: float | None = None
        self._expiry: str | None = None
        self._owner: str | None = None

    # -- loading -----------------------------------------------------------------------

    def __await__(self) -> Generator[Any, None, Session]:
        return self.load().__await__()

    async def load(self) -> Session:
        """Load the data from the store (once per request) and return this session."""
        if self._loaded:
            return self
        loading = self._loading
        if loading is not None:
            # Another task of this request is loading it: wait instead of loading twice.
            # The future exists only when someone waits, which is almost never.
            if not isinstance(loading, asyncio.Future):
                loading = self._loading = asyncio.get_running_loop().create_future()
            await loading
            return self
        self._loading = _LOADING
        self._start_tracking()
        try:
            key = self._client_key()
            record = await self._config.store.load(key) if key is not None else None
            if record is not None:
                self._adopt(key, record)  # type: ignore[arg-type]
        except BaseException as exc:
            waiting, self._loading = self._loading, None
            if isinstance(waiting, asyncio.Future):
                waiting.set_exception(exc)
                waiting.exception()  # retrieved: the waiters re-raise it, nobody logs it
            raise
        self._loaded = True
        self.accessed = True
        waiting, self._loading = self._loading, None
        if isinstance(waiting, asyncio.Future):
            waiting.set_result(None)
        return self

    def _client_key(self) -> str | None:
        """The session key from the request's cookie, if its signature verifies."""
        if self._cookie_key is _MISSING:
            config = self._config
            key = None
            values = cookie_values(self._headers, config.cookie.name_bytes)
            verified = config.verified
            for value in values:
                key = verified.get(value) if verified is not None else None
                if key is None:
                    key = config.store.decode_cookie(value, config.signer)
                    if key is not None and verified is not None:
                        verified.add(value, key)
                if key is not None:
                    break
            if values and key is None:
                logger.warning("Session cookie with a bad signature ignored; fresh session.")
            self._cookie_key = key
        return self._cookie_key  # type: ignore[return-value]

    def _log_id(self) -> str:
        """A log-safe handle for this session (never the key itself)."""
        key = self._key if self._key is not None else self._cookie_key
        return short_hash(key) if isinstance(key, str) else "(new)"

    @property
    def _had_cookie(self) -> bool:
        return bool(cookie_values(self._headers, self._config.cookie.name_bytes))

    def _adopt(self, key: str, record: StoredSession) -> None:
        if record.decoded is not None:
            dict.update(self, record.decoded)
        else:
            self._hold_encoded(record.data, self._config.serializer.loads)
        self._key = key
        self._created_at = record.created_at
        self._expiry = record.expiry
        self._owner = record.owner

    @property
    def is_empty(self) -> bool:
        """No stored record and no data (``True`` before the session is loaded)."""
        return self._key is None and not dict.__len__(self)

    @property
    def session_key(self) -> str | None:
        """The key in the cookie; ``None`` until the session is first saved."""
        return self._key

    @property
    def public_id(self) -> str | None:
        """The id under which ``store.list_sessions()`` shows this session."""
        if self._key is None or self._config.store.keeps_data_in_cookie:
            return None
        return public_id_for(hash_key(self._key))

    @property
    def owner(self) -> str | None:
        """The user id this session belongs to (for listing and revoking), or ``None``."""
        self._require_loaded("reading the owner")
        return self._owner

    @owner.setter
    def owner(self, user_id: str | None) -> None:
        self._require_loaded("setting the owner")
        if user_id is not None and not isinstance(user_id, str):
            raise TypeError(f"owner must be a str user id, not {type(user_id).__name__}.")
        if user_id != self._owner:
            self._owner = user_id
            self._meta_changed = True
            self._modified = True

    # -- expiry ------------------------------------------------------------------------

    def set_expiry(self, value: int | timedelta | datetime | None) -> None:
        """Set when the session expires.

        ``int`` seconds or a ``timedelta`` of inactivity; an aware ``datetime``; ``0`` for
        a cookie that ends when the browser closes; ``None`` for the middleware's default.
        """
        self._require_loaded("set_expiry()")
        self._expiry = encode_expiry(value, self._config.store.clock())
        self._meta_changed = True
        self._modified = True

    def get_expiry_age(self) -> int:
        """Seconds from now until the session expires."""
        self._require_loaded("get_expiry_age()")
        now = self._config.store.clock()
        return round(self._expires_at(now) - now)

    def get_expiry_date(self) -> datetime:
        """When the session expires (aware, UTC)."""
        self._require_loaded("get_expiry_date()")
        return datetime.fromtimestamp(self._expires_at(self._config.store.clock()), UTC)

    def get_expire_at_browser_close(self) -> bool:
        """Whether the cookie ends with the browser session (no Max-Age)."""
        self._require_loaded("get_expire_at_browser_close()")
        return ends_with_browser(self._expiry, self._config.max_age)

    def _expires_at(self, now: float) -> float:
        config = self._config
        return expires_at(
            self._expiry,
            now=now,
            default_age=DEFAULT_MAX_AGE if config.max_age is None else config.max_age,
            created_at=self._created_at,
            absolute_timeout=config.absolute_timeout,
        )

    def _cookie_max_age(self, now: float) -> int | None:
        config = self._config
        if ends_with_browser(self._expiry, config.max_age) and config.absolute_timeout is None:
            return None
        return round(self._expires_at(now) - now)

    # -- persisting --------------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self._changed or self._replace or self._all_dirty or self._meta_changed)

    def _encode(self, keys: Iterable[str]) -> tuple[dict[str, str], frozenset[str]]:
        dumps = self._config.serializer.dumps
        encoded: dict[str, str] = {}
        deleted: list[str] = []
        for key in keys:
            if not dict.__contains__(self, key):
                deleted.append(key)
                continue
            value = dict.__getitem__(self, key)
            if type(value) is Stored:
                encoded[key] = value.text  # never decoded, so unchanged: write it back as is
                continue
            try:
                encoded[key] = dumps(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(
                    f"The session value under {key!r} cannot be stored: {exc}. Store only "
                    "values the serializer accepts (for JSON: str, int, float, bool, None, "
                    "and lists and dicts of them with str keys)."
                ) from exc
        return encoded, frozenset(deleted)

    async def _write(self) -> None:
        """Persist pending changes (create the record if it has no key yet)."""
        store = self._config.store
        now = store.clock()
        create = self._key is None
        everything = create or self._replace or self._all_dirty
        # Encode before any I/O so an unencodable value leaves the store untouched.
        values, deleted = self._encode(dict.keys(self) if everything else self._changed)
        if create and self._created_at is None:
            self._created_at = now
        change = SessionWrite(
            set=values,
            deleted=deleted,
            replace=create or self._replace,
            create=create,
            expires_at=self._expires_at(now),
            created_at=self._created_at if self._created_at is not None else now,
            updated_at=now,
            expiry=self._expiry,
            owner=self._owner,
            full_data=self,
        )
        if create:
            for attempt in range(_CREATE_ATTEMPTS):
                try:
                    self._key = await store.save(secrets.token_urlsafe(_KEY_BYTES), change)
                    break
                except KeyCollision:
                    if attempt == _CREATE_ATTEMPTS - 1:
                        raise
        else:
            self._key = await store.save(self._key, change)  # type: ignore[arg-type]
        self._changed.clear()
        self._replace = self._all_dirty = self._meta_changed = False
        self._written = True

    async def save(self) -> None:
        """Write pending changes now (WebSocket handlers, background work).

        An empty session is not stored: a new one is skipped, a stored one is deleted.
        """
        self._require_loaded("save()")
        if not dict.__len__(self):
            if self._key is not None:
                await self._config.store.delete(self._key)
                self._key = None
            return
        if self._key is None or self._pending():
            await self._write()

    async def cycle_key(self) -> None:
        """Give the session a new key, keep its data, delete the old record (call at login)."""
        await self.load()
        old_key = self._key
        self._key = None
        if dict.__len__(self):
            await self._write()
        if old_key is not None:
            await self._config.store.delete(old_key)
        self._modified = True

    async def flush(self) -> None:
        """Clear the data, delete the record and remove the cookie (call at logout)."""
        key = self._key if self._loaded else self._client_key()
        dict.clear(self)
        written = self._loaded and self._written
        self._start_tracking()
        self._written = written
        self._key = None
        self._loaded = self.accessed = self._modified = True
        if key is not None:
            await self._config.store.delete(key)

    async def _finish(self, renew: bool) -> str | bool | None:
        """Save at the end of a request.

        Returns the ``Set-Cookie`` value to send, ``True`` to delete the cookie, or
        ``None`` to leave it alone.
        """
        if not dict.__len__(self):
            if self._key is not None:
                await self._config.store.delete(self._key)
                self._key = None
                return self._had_cookie or None
            return (self._modified and self._had_cookie) or None
        if self._key is None or self._pending() or renew:
            await self._write()
        if not self._written:
            return None
        config = self._config
        now = config.store.clock()
        value = config.store.encode_cookie(self._key, config.signer)  # type: ignore[arg-type]
        if config.verified is not None:
            config.verified.add(value, self._key)  # type: ignore[arg-type]  # signed just now
        return config.cookie.set_header(value, self._cookie_max_age(now))
