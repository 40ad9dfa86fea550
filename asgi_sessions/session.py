"""Session: a lazily loaded, change-tracking ``dict`` bound to one request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from .cookies import (
    _PENDING,
    CookieSettings,
    Signer,
    VerifiedCookies,
    cookie_header,
    cookie_values,
    pending_pair,
    split_pending,
)
from .devices import RecordIP, request_device
from .django_async import DjangoAsyncAPI
from .errors import OutcomeUnknown, SessionInterrupted, SessionStoreError
from .expiry import encode_expiry, ends_with_browser, renewal_interval, resolve_expires_at
from .importers import Importer, OldCookie, import_session, is_derived
from .serializers import JSONSerializer, Serializer
from .stores.base import Merge, Saved, SessionWrite, Store, StoredSession, hash_key, public_id_for
from .tracking import _IMMUTABLE, TrackedDict

if TYPE_CHECKING:
    from .events import SessionEvents
    from .observer import Observer
    from .telemetry import Telemetry

__all__ = ["DEFAULT_MAX_AGE", "Session", "SessionConfig"]

logger = logging.getLogger("asgi_sessions")

#: Fourteen days, as in Django and Starlette.
DEFAULT_MAX_AGE: Final = 14 * 24 * 60 * 60

_MISSING: Any = object()
_NOTHING: frozenset[str] = frozenset()
_NO_MERGES: dict[str, Merge] = {}
_LOADING = object()  # a load is in progress and nobody is waiting for it yet
# A session with no record yet has no encoded forms (read-only: a save rebinds _texts).
_NO_TEXTS: Mapping[str, str] = MappingProxyType({})


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
    """Signatures already checked (``None``: check every cookie afresh)."""
    rotate_on_owner_change: bool = True
    detect_nested_changes: bool = True
    renew_interval: float = 0
    """The option as given; each session caps it (:func:`.expiry.renewal_interval`)."""
    importers: tuple[Importer, ...] = ()
    """Other libraries' sessions to take over (see :mod:`asgi_sessions.importers`)."""
    events: SessionEvents | None = None
    """Lifecycle handlers (see :mod:`asgi_sessions.events`); ``None``: none, no cost."""
    telemetry: Telemetry | None = None
    """OpenTelemetry metrics (see :mod:`asgi_sessions.telemetry`); ``None``: none, no cost."""
    record_ip: RecordIP = False
    """Keep the client address with an owned session's device (:mod:`.devices`)."""

    @property
    def default_age(self) -> int:
        """How long a record lives after a save when its expiry setting names no time."""
        return DEFAULT_MAX_AGE if self.max_age is None else self.max_age


def short_hash(session_key: str) -> str:
    """A log-safe handle for a key: 12 hex characters of the stored hash."""
    return hash_key(session_key)[:12]


class Session(DjangoAsyncAPI, TrackedDict):
    """A ``dict`` of the request's session data that knows what changed.

    Await it (``session = await request.state.session``) before touching the data; it is
    loaded from the store at most once. Top-level changes are tracked as they happen;
    lists and dicts changed in place are found at save time. Django's async methods
    (``await session.aget(key)``, ...) load it themselves.
    """

    __slots__ = (
        "_client",
        "_config",
        "_cookie_key",
        "_cookie_value",
        "_created_at",
        "_dropped",
        "_expires_at",
        "_expiry",
        "_expiry_changed",
        "_headers",
        "_imported_from",
        "_key",
        "_loading",
        "_observer",
        "_owner",
        "_owner_changed",
        "_rotated",
        "_stale_cookie",
        "_unknown",
        "_updated_at",
        "_written",
    )

    def __init__(
        self,
        config: SessionConfig,
        headers: Iterable[tuple[bytes, bytes]] = (),
        client: Any = None,
    ) -> None:
        # No I/O and no cookie parsing here: a request that never awaits the session
        # pays only for this constructor.
        # TrackedDict's state, set here rather than through its __init__: one call fewer
        # on every request.
        self._loaded = False
        self.accessed = False
        self._modified = False
        self._config: SessionConfig = config
        self._headers = headers
        self._client = client  # the ASGI scope's ("host", port), for record_ip
        self._loading: asyncio.Future[None] | object | None = None
        self._cookie_key: str | object | None = _MISSING
        self._key: str | None = None
        # A write whose outcome is unknown, and the key the session had before it.
        self._unknown: tuple[OutcomeUnknown, str | None] | None = None
        # Set by the middleware when the app registered lifecycle handlers.
        self._observer: Observer | None = None
        # The rest of the state is set by _start_tracking(), once the session is loaded.

    def _start_tracking(self) -> None:
        # TrackedDict._reset_changes, inlined (it runs on every load), with no mapping
        # allocated for the encoded forms: _adopt() sets the store's own.
        self._dumps = self._config.serializer.dumps
        self._texts = _NO_TEXTS
        self._lazy_texts = False
        self._assigned = {}
        self._changed = set()
        self._deltas = {}
        self._fresh_lists = set()
        self._handed = set()
        self._handed_all = self._replace = self._all_dirty = False
        self._written = False
        self._dropped = False
        self._rotated = False
        self._created_at: float | None = None
        self._updated_at: float | None = None
        self._expires_at: float | None = None
        self._expiry: str | None = None
        self._owner: str | None = None
        self._owner_changed = False
        self._expiry_changed = False
        self._imported_from: OldCookie | None = None

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
            record = None
            if key is not None:
                if _PENDING not in key:
                    store, observer = self._config.store, self._observer
                    # With handlers, a load that finds the record expired fires "expired".
                    record = await (
                        store.load(key) if observer is None else observer.load(store, key)
                    )
                else:
                    key, record = await self._resolve_pending(*split_pending(key))  # type: ignore[arg-type]
            if record is not None:
                self._adopt(key, record)  # type: ignore[arg-type]
            elif self._config.importers:
                await self._import()
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

    async def _resolve_pending(
        self, new_key: str, old_key: str
    ) -> tuple[str, StoredSession | None]:
        """A pending-rotation cookie (``new~old``): the new key's record, else the old one's.

        The pair lives for one round trip: the response replaces it with a plain cookie for
        the key found, or deletes it if neither exists. Safe against fixation: if the move
        happened the old key is dead (a move kills it), and if it did not, the old record
        is still the pre-rotation session (the owner change was part of the move).
        """
        store = self._config.store
        record = await store.load(new_key)
        key = new_key
        if record is None:
            key, record = old_key, await store.load(old_key)
        self._written = record is not None  # the response sets a plain cookie
        self._dropped = record is None  # the response deletes the pair
        return key, record

    async def _import(self) -> None:
        """Take over the old library's session the request carries, if any."""
        found = await import_session(self._config, self._headers)
        if found is not None:
            key, record, old = found
            self._imported_from = old  # the response removes the old cookie
            if key is not None and record is not None:
                self._adopt(key, record)
                self._written = True  # the response sets our cookie

    def _client_key(self) -> str | None:
        """The session key from the request's cookie, if its signature verifies."""
        if self._cookie_key is _MISSING:
            config = self._config
            key = None
            self._stale_cookie = False
            verified = config.verified
            raw = None
            if verified is not None:
                # A returning browser sends the same Cookie header again: one lookup.
                raw = cookie_header(self._headers)
                if raw is not None:
                    hit = verified.get_header(raw)
                    if hit is not None:
                        self._cookie_value, key = hit
                        self._cookie_key = key
                        return key
            values = cookie_values(self._headers, config.cookie.name_bytes)
            for value in values:
                key = verified.get(value) if verified is not None else None
                if key is None:
                    key = self._verify(value)
                if key is not None:
                    self._cookie_value = value
                    break
            # An old library's cookie under our name is not a bad signature: an importer
            # takes it over (or refuses it) without alarming the log.
            if (
                values
                and key is None
                and not any(
                    importer.cookie_name == config.cookie.name and importer.token(value) is not None
                    for importer in config.importers
                    for value in values
                )
            ):
                logger.warning("Session cookie with a bad signature ignored; fresh session.")
            if key is not None and raw is not None and not self._stale_cookie:
                verified.add_header(raw, self._cookie_value, key)  # type: ignore[union-attr]
            self._cookie_key = key
        return self._cookie_key  # type: ignore[return-value]

    def _verify(self, value: str) -> str | None:
        """Check a cookie the current secret did not sign recently; note an old secret's."""
        config = self._config
        verified = config.verified
        key = verified.get_stale(value) if verified is not None else None
        if key is None:
            found = config.store.verify_cookie(value, config.signer)
            if found is None:
                return None
            key, stale = found
            if verified is not None:
                verified.add(value, key, stale=stale)
        else:
            stale = True
        # Signed with a secret being retired: the response signs it again (no store write).
        self._stale_cookie = stale
        return key

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
            self._texts = {}
            self._lazy_texts = True  # encoded only if handed out (nested-change detection)
        else:
            # Every value decoded now: C code (orjson, msgspec, pickle) reads the dict
            # directly and must never meet a placeholder.
            self._texts = record.data
            loads = self._config.serializer.loads
            try:
                dict.update(self, {name: loads(text) for name, text in record.data.items()})
            except ValueError:
                dict.clear(self)
                raise self._undecodable(record.data) from None
        self._key = key
        self._created_at = record.created_at
        self._updated_at = record.updated_at
        self._expires_at = record.expires_at
        self._expiry = record.expiry
        self._owner = record.owner

    def _undecodable(self, data: dict[str, str]) -> SessionStoreError:
        loads = self._config.serializer.loads
        for name, text in data.items():
            try:
                loads(text)
            except ValueError as exc:
                return SessionStoreError(
                    f"The stored value under {name!r} cannot be decoded ({exc}). Was the "
                    "serializer changed? Flush this session or clear the store."
                )
        raise AssertionError("unreachable")  # pragma: no cover

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
        # Refused here, on every store alike, rather than by a store at save time:
        # PostgreSQL's text cannot hold U+0000, and no store can encode a lone surrogate.
        if user_id is not None and "\x00" in user_id:
            raise TypeError(
                f"The owner {user_id!r} cannot be stored: it contains a NUL character. "
                "Use an id without one."
            )
        if user_id is not None and not user_id.isascii():
            try:
                user_id.encode()
            except UnicodeEncodeError as exc:
                raise TypeError(f"The owner {user_id!r} cannot be stored: {exc}.") from exc
        if user_id != self._owner:
            if self._observer is not None and not self._owner_changed:
                self._observer.owner_before = self._owner  # the owner_changed event's "from"
            self._owner = user_id
            self._owner_changed = True
            self._modified = True

    # -- expiry ------------------------------------------------------------------------

    def set_expiry(self, value: int | timedelta | datetime | None) -> None:
        """Set when the session expires.

        ``int`` seconds of inactivity (counted again from every save); a ``timedelta``
        from now or an aware ``datetime`` (a fixed moment); ``0`` for a cookie that ends
        when the browser closes; ``None`` for the middleware's default.
        """
        self._require_loaded("set_expiry()")
        self._expiry = encode_expiry(value, self._config.store.clock())
        self._expiry_changed = True
        self._modified = True

    def get_expiry_age(self) -> int:
        """Seconds from now until the session would expire if it were saved now."""
        self._require_loaded("get_expiry_age()")
        now = self._config.store.clock()
        return round(self._would_expire_at(now) - now)

    def get_expiry_date(self) -> datetime:
        """When the session would expire if it were saved now (aware, UTC)."""
        self._require_loaded("get_expiry_date()")
        return datetime.fromtimestamp(self._would_expire_at(self._config.store.clock()), UTC)

    def get_expire_at_browser_close(self) -> bool:
        """Whether the cookie ends with the browser session (no Max-Age)."""
        self._require_loaded("get_expire_at_browser_close()")
        return ends_with_browser(self._expiry, self._config.max_age)

    def _cap(self, now: float) -> float | None:
        timeout = self._config.absolute_timeout
        if timeout is None:
            return None
        return (self._created_at if self._created_at is not None else now) + timeout

    def _would_expire_at(self, now: float) -> float:
        return resolve_expires_at(self._expiry, now, now + self._config.default_age, self._cap(now))

    # -- persisting --------------------------------------------------------------------

    def _unchanged(self) -> bool:
        """Loaded and left as it was: nothing to save, no cookie to send or remove, no
        container handed out that may have changed (the middleware's read-only path)."""
        return not (
            self._modified
            or self._written
            or self._dropped
            or self._handed
            or self._handed_all
            or self._stale_cookie
            or self._unknown is not None
        )

    def _pending(self) -> bool:
        return bool(
            self._changed
            or self._replace
            or self._all_dirty
            or self._owner_changed
            or self._expiry_changed
        )

    def _change(self, now: float, nested: dict[str, str]) -> SessionWrite:
        """The write that carries this request's pending changes (all data when new)."""
        create = self._key is None
        text = self._text
        values: dict[str, str] = {}
        deleted: list[str] = []
        if create or self._replace or self._all_dirty:
            for key, value in dict.items(self):
                values[key] = text(key, value)
            if not (create or self._replace):
                deleted = [key for key in self._changed if key not in values]
        else:
            assigned = self._assigned
            for key in self._changed:
                value = dict.get(self, key, _MISSING)
                if value is _MISSING:
                    deleted.append(key)
                    continue
                # An immutable value assigned in this request was encoded then (_text's
                # first answer, without the call).
                encoded = assigned.get(key) if type(value) in _IMMUTABLE else None
                values[key] = encoded if encoded is not None else text(key, value)
        if nested:
            values.update(nested)
        merges = _NO_MERGES
        # A merge is a counter, a list created empty here, a deleted key or a nested
        # change: a request that only assigned keys has none to look for.
        if (
            not (create or self._replace)
            and (deleted or nested or self._deltas or self._fresh_lists)
            and self._merging
        ):
            merges = self._merges(nested)
            if merges:
                for key in merges:
                    values.pop(key, None)
                deleted = [key for key in deleted if key not in merges]
        if create and self._created_at is None:
            self._created_at = now
        return SessionWrite(
            values,
            frozenset(deleted) if deleted else _NOTHING,
            self._replace and not create,
            create,
            now,
            now + self._config.default_age,
            None if self._config.absolute_timeout is None else self._cap(now),
            self._created_at if self._created_at is not None else now,
            self._owner,
            self._owner_changed,
            self._expiry,
            self._expiry_changed,
            self,
            merges,
            self._device() if (create or self._owner_changed) and self._owner is not None else None,
        )

    def _device(self) -> str | None:
        """The device text an owned session's create or owner change writes."""
        if self._config.store.keeps_data_in_cookie:
            return None  # nothing lists cookie sessions: keep the cookie small
        return request_device(self._headers, self._client, self._config.record_ip)

    @property
    def _merging(self) -> bool:
        """Whether saves send lists and counters as merges: a server store, JSON values."""
        config = self._config
        return not config.store.keeps_data_in_cookie and type(config.serializer) is JSONSerializer

    def _nested(self) -> dict[str, str]:
        if self._key is None:
            return {}  # a new session writes every key anyway
        return self._nested_changes()

    async def _persist(self, *, rotate: bool = False, nested: dict[str, str] | None = None) -> None:
        """Write the pending changes: create, merge, or merge and move to a new key."""
        if self._unknown is not None:
            # An earlier write of this request may or may not have happened: writing on
            # from a state nobody knows could undo it. The 503 sends the cookie that works
            # either way, and the client's retry starts from what the store holds.
            raise self._unknown[0]
        store = self._config.store
        now = store.clock()
        change = self._change(now, self._nested() if nested is None else nested)
        key = self._key
        if key is None:
            try:
                saved = await store.create(change)
            except OutcomeUnknown as exc:
                self._unknown = (exc, None)
                raise
        elif store.keeps_data_in_cookie and now >= self._expires_at:  # type: ignore[operator]
            # The cookie is the record and nobody else renews it: past its end it is gone.
            if self._observer is not None:
                await self._observer.ended(store, "expired", key, self._owner)
            self._drop()
            return
        else:
            rotate = rotate or (
                self._owner_changed and self._config.rotate_on_owner_change and not self._rotated
            )
            try:
                if rotate:
                    saved = await store.rotate(key, change)
                    self._rotated = True
                else:
                    saved = await store.save(key, change)
            except OutcomeUnknown as exc:
                # Maybe moved to exc.attempted_key (the old key then dead), maybe not.
                self._unknown = (exc, key)
                raise
            except SessionInterrupted:
                if self._expires_at is not None and now >= self._expires_at:
                    # It merely expired meanwhile: not a logout, and its stale data must
                    # not live on in a new session (that would defeat absolute_timeout).
                    if self._observer is not None:
                        await self._observer.ended(store, "expired", key, self._owner)
                    self._drop()
                    return
                raise
        owner_changed = change.owner_changed
        self._saved(saved, change)
        if self._observer is not None:  # after the store returned: the write happened
            await self._observer.wrote(
                store, key, saved.key, saved.alive, change.owner, owner_changed, change.device
            )

    def _saved(self, saved: Saved, change: SessionWrite) -> None:
        self._changed.clear()
        if self._deltas or self._fresh_lists:
            self._deltas.clear()
            self._fresh_lists.clear()
        self._replace = self._all_dirty = False
        self._owner_changed = self._expiry_changed = False
        # The lists and dicts the view was handed stay watched (it still holds them), now
        # against what this save wrote: `cart = s["cart"]; await s.save()` then
        # `cart.append(...)` is saved by the next save or the response.
        if not saved.alive:
            # Nothing was left after the merge: the store deleted the record.
            self._drop()
            return
        self._key = saved.key
        self._written = True
        self._dropped = False
        self._expires_at = saved.expires_at
        self._expiry = saved.expiry
        self._updated_at = change.now
        if self._lazy_texts:
            self._texts.update(change.set)  # type: ignore[attr-defined]
        else:
            self._texts = {**self._texts, **change.set} if self._texts else dict(change.set)
        if change.merges:
            # What this request now holds is what its next change is measured against
            # (the store may hold more: other requests' appends).
            texts = self._texts
            for key in change.merges:
                value = dict.get(self, key, _MISSING)
                if value is _MISSING:
                    texts.pop(key, None)  # type: ignore[attr-defined]
                else:
                    texts[key] = self._encode(key, value)  # type: ignore[index]

    def _drop(self) -> None:
        """Forget the record: it is gone, and so is everything this request knew of it."""
        dict.clear(self)
        self._reset_changes(self._config.serializer.dumps)
        self._key = None
        self._written = False
        self._dropped = True
        self._created_at = self._updated_at = self._expires_at = None
        # Its owner and expiry setting too (as Django's flush() clears _session_expiry):
        # a session created later in the request must not inherit "remember me".
        self._owner = self._expiry = None
        self._owner_changed = self._expiry_changed = False

    async def save(self) -> None:
        """Write pending changes now (WebSocket handlers, background work).

        A new session that is still empty is not stored; a stored one whose data is all
        gone after the merge is deleted.
        """
        self._require_loaded("save()")
        if self._key is None:
            if dict.__len__(self):
                await self._persist()
            return
        nested = self._nested()
        if self._pending() or nested:
            await self._persist(nested=nested)

    async def cycle_key(self) -> None:
        """Give the session a new key, keep its data, kill the old key (call at login).

        The stored record, with this request's changes merged in, moves to the new key
        in one step: a concurrent request on the old key finds nothing from then on.
        """
        await self.load()
        self._modified = True
        if self._key is None:
            if dict.__len__(self):
                await self._persist()
            return
        await self._persist(rotate=True)

    async def flush(self) -> None:
        """Clear the data, delete the record and remove the cookie (call at logout)."""
        key = self._key if self._loaded else self._client_key()
        if not self._loaded:
            self._start_tracking()
        owner = self._owner
        self._drop()
        self._loaded = self.accessed = self._modified = True
        # Every key the client may hold: both of a pending pair, and the key a write of
        # this request may have created (else it would outlive the logout, unreachable).
        keys = [] if key is None else [k for k in split_pending(key) if k is not None]
        if self._unknown is not None:
            keys.append(self._unknown[0].attempted_key)
        for doomed in keys:
            await self._config.store.delete(doomed)
        self._unknown = None
        if self._observer is not None and key is not None:
            await self._observer.ended(self._config.store, "flushed", keys[0], owner)

    def _retiring(self) -> bool:
        """Loaded through our cookie naming a key derived from an old cookie: that key
        serves one request only (a copy of the old cookie may have reached it)."""
        if not self._config.importers or self._rotated:
            return False
        key = self._key
        return key is not None and key == self._cookie_key and is_derived(key)

    async def _retire(self, nested: dict[str, str] | None) -> None:
        """Move the session to a random key, with this request's changes, as
        ``cycle_key()`` does."""
        nested = self._nested() if nested is None else nested
        pending = self._pending() or bool(nested)
        try:
            await self._persist(rotate=True, nested=nested)
        except SessionInterrupted:
            if pending:
                raise
            # A concurrent request moved it first: its response carries the new key.

    def _renewal_due(self, now: float) -> bool:
        updated = self._updated_at
        if updated is None:
            return True
        config = self._config
        # Throttled by this session's own idle window too, not only max_age's: a 60 s
        # interval let set_expiry(30) sign out a client that came back every 20 s.
        interval = renewal_interval(self._expiry, config.renew_interval, config.default_age)
        if now - updated >= interval:
            return True
        if config.telemetry is not None:
            config.telemetry.renewal_skipped(config.store)
        return False

    async def _finish(self, renew: bool) -> str | bool | None:
        """Save at the end of a request.

        Returns the ``Set-Cookie`` value to send, ``True`` to delete the cookie, or
        ``None`` to leave it alone.
        """
        if self._key is None:
            if self._modified and dict.__len__(self):
                await self._persist()
        else:
            config = self._config
            if not config.detect_nested_changes:
                nested = None  # a save that happens anyway still looks (_persist)
            elif self._handed or self._handed_all:
                nested = self._nested_changes()
            else:
                nested = {}  # nothing handed out: nothing changed in place
            if config.importers and self._retiring():
                await self._retire(nested)
            elif (
                (self._modified and self._pending())
                or nested
                # An import just wrote the record: nothing to renew.
                or (
                    renew
                    and self._imported_from is None
                    and self._renewal_due(self._config.store.clock())
                )
            ):
                await self._persist(nested=nested)
        if self._written and self._key is not None:
            return self._set_cookie()
        if (self._dropped or (self._modified and self._key is None)) and self._had_cookie:
            # A stored record that nothing changed (``update({})`` sets ``modified`` too)
            # keeps its cookie: only a session that ended, or never got a key, drops it.
            return True
        if self._imported_from is not None and self._key is None:
            return True  # an old cookie that imported nothing (any more): remove it
        if self._stale_cookie and self._key is not None:
            # The cookie names a live record but only an old secret verifies it: the same
            # key, signed with the current secret, so the old one can be retired.
            self._key = self._config.store.reissue_key(self._key)
            return self._set_cookie()
        return None

    def _outcome_cookie(self) -> str | None:
        """The ``Set-Cookie`` for a failed response when a write's outcome is unknown.

        A create's attempted key (an unknown key loads as a fresh session; a stored one is
        the user's), or a rotation's pending pair "new, else old" (see
        :meth:`_resolve_pending`); ``None`` when no write of unknown outcome happened.
        """
        if self._unknown is None:
            return None
        exc, old_key = self._unknown
        config = self._config
        key = exc.attempted_key if old_key is None else pending_pair(exc.attempted_key, old_key)
        value = config.store.encode_cookie(key, config.signer)
        if ends_with_browser(self._expiry, config.max_age):
            return config.cookie.set_header(value, None)
        now = config.store.clock()
        # Long enough for whichever record exists: a cookie that outlives it is harmless.
        ends = max(self._would_expire_at(now), self._expires_at or now)
        return config.cookie.set_header(value, max(1, round(ends - now)))

    def _set_cookie(self) -> str:
        config = self._config
        key: str = self._key  # type: ignore[assignment]
        if key == self._cookie_key and not self._stale_cookie and config.verified is not None:
            # The same key the request's cookie carries, signed with the current secret:
            # that cookie value is the one to send again (no HMAC).
            value = self._cookie_value
        else:
            value = config.store.encode_cookie(key, config.signer)
            if config.verified is not None:
                config.verified.add(value, key)  # signed just now
        expiry = self._expiry
        # ends_with_browser(), inlined: this runs on every response that sets the cookie.
        if (config.max_age is None) if expiry is None else expiry == "s:0":
            return config.cookie.set_header(value, None)
        return config.cookie.set_header(
            value,
            round(self._expires_at - config.store.clock()),  # type: ignore[operator]
        )
