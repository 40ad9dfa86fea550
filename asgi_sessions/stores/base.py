"""The store boundary: one base class, and the records that cross it.

A backend subclasses :class:`Store` and implements five hooks in terms of a *store id*
(the SHA-256 of the session key, so a leaked database cannot be replayed as cookies):

- :meth:`Store.read` returns the live record or ``None``;
- :meth:`Store.write` applies one :class:`SessionWrite` atomically: a merge into the
  stored record (or its creation), which also decides, after the merge, whether the
  record is now empty and must go;
- :meth:`Store.move` does the same merge and moves the result to a new id, atomically
  (``cycle_key()``: the old id is dead from that instant);
- :meth:`Store.remove` deletes a record;
- :meth:`Store.purge_expired` deletes expired records and counts them (a store that
  deletes in batches implements :meth:`Store.purge_expired_batches` instead, so that
  ``clear_expired(progress=...)`` and the CLI can report progress);
- :meth:`Store.stats` (optional) counts sessions, owners and bytes for ``asgi-sessions stats``.

The public methods (``load``, ``create``, ``save``, ``rotate``, ``delete``, ``get``,
``clear_expired``) mint and hash keys and call the hooks; a store whose keys carry more
than randomness (the cookie store, a cluster store routing by key) overrides them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from contextlib import aclosing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, Self

from ..cookies import Signer
from ..devices import decode_device, device_label
from ..errors import KeyCollision, OutcomeUnknown, SessionStoreError, StoreCapabilityError
from ..events import SessionEvents, observed, store_event
from ..serializers import JSONSerializer, Serializer

Merge = tuple[tuple[str, ...], tuple[str, ...]] | int
"""One same-key change a store applies to whatever it holds now: ``(seen, appended)``
for a list used as a queue (drop the leading items this request saw, if they still lead,
then append), or an ``int`` delta for a counter (:meth:`Session.increment`)."""

__all__ = [
    "IMPORT_MARKER_KEY",
    "Clock",
    "OwnedSession",
    "Saved",
    "SessionRecord",
    "SessionWrite",
    "Store",
    "StoreStats",
    "StoredSession",
    "WriteOutcome",
    "attempting",
    "hash_key",
    "is_import_marker",
    "merge_value",
    "merged_data",
    "public_id_for",
    "split_json_list",
]

# A key (43 characters, 47 with a cluster's slot tag) plus its signature (43) and the dot;
# a pending-rotation cookie carries two keys and a "~" (47 + 1 + 47 + 1 + 43 = 139).
# Anything longer is not ours.
_MAX_KEY_COOKIE = 160
# 32 bytes from secrets: 256 bits, well past OWASP's 64 and ASVS 5's 128.
_KEY_BYTES = 32
# A collision of 256-bit keys never happens by chance; a few attempts cover a store that
# answers "exists" for another reason (a record our clock already calls dead, say).
_CREATE_ATTEMPTS = 5

Clock = Callable[[], float]
"""Returns the current time in seconds since the epoch (``time.time`` by default)."""


# Memoised: a returning browser's key is hashed on every request that loads or saves.
@functools.lru_cache(maxsize=16_384)
def hash_key(session_key: str) -> str:
    """The id a server store keeps for ``session_key``: its SHA-256, in hex."""
    return hashlib.sha256(session_key.encode()).hexdigest()


@contextmanager
def attempting(session_key: str) -> Iterator[None]:
    """Inside it, a store error means "maybe applied under ``session_key``".

    Wraps the write of a create or a rotation under a key just minted: any
    ``SessionStoreError`` (a lost reply, a timeout, ``WAIT`` failing after the write, a
    connection dropped after ``COMMIT``) is re-raised as :class:`OutcomeUnknown` carrying
    that key, so the response can give the client a cookie that works either way.
    """
    try:
        yield
    except OutcomeUnknown:
        raise
    except SessionStoreError as exc:
        raise OutcomeUnknown(*exc.args, attempted_key=session_key) from exc


def public_id_for(store_id: str) -> str:
    """A short id for listing a session to its owner, derived from the store id, never the key."""
    return hashlib.sha256(b"public:" + store_id.encode()).hexdigest()[:24]


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@dataclass(slots=True)
class StoredSession:
    """One session as a store hands it back: data still encoded, one string per key."""

    data: dict[str, str]
    """Top-level key -> the serializer's text for its value."""
    expires_at: float
    """Seconds since the epoch after which the record is dead."""
    created_at: float
    updated_at: float
    expiry: str | None = None
    """The session's own ``set_expiry`` setting (see :mod:`asgi_sessions.expiry`)."""
    owner: str | None = None
    """The user id the session is bound to (``session.owner``), or ``None``."""
    device: str | None = None
    """The owner's device, as :func:`asgi_sessions.devices.encode_device` wrote it."""
    decoded: dict[str, Any] | None = None
    """Already decoded data, for stores that decode the whole session at once (the cookie
    store); when set, ``data`` is ignored."""


@dataclass(slots=True)
class SessionWrite:
    """Everything one save changes. A store applies it atomically or not at all.

    Built once per save and never changed (not frozen only because a frozen dataclass
    costs a slow ``object.__setattr__`` per field, on every save).

    Server stores merge it into what is stored: keys in ``deleted`` go, keys in ``set``
    are written (last writer wins per key), ``owner`` and ``expiry`` are written only if
    this request changed them, and the record's end is recomputed from the expiry setting
    in force after the merge (:func:`asgi_sessions.expiry.resolve_expires_at`). A record
    left without data is deleted.
    """

    set: Mapping[str, str]
    """Keys to write, already encoded."""
    deleted: frozenset[str]
    """Keys to remove."""
    replace: bool
    """Drop every stored key before applying ``set`` (``session.clear()``)."""
    create: bool
    """``True``: a new record (raise ``KeyCollision`` if the id is taken by a live one).
    ``False``: merge into the stored record (raise ``SessionInterrupted`` if it is gone)."""
    now: float
    default_expires_at: float
    """When the record ends if its expiry setting names no time of its own."""
    expires_cap: float | None
    """Creation + ``absolute_timeout``: the record never outlives it (``None``: no cap)."""
    created_at: float
    """For a new record; a merge keeps the stored creation time."""
    owner: str | None = None
    owner_changed: bool = False
    expiry: str | None = None
    expiry_changed: bool = False
    full_data: Mapping[str, Any] = field(default_factory=dict)
    """The whole decoded session after the change, for stores that rewrite everything
    (the cookie store, which also writes ``owner`` and ``expiry`` as given); server
    stores ignore it."""
    merges: Mapping[str, Merge] = field(default_factory=dict)
    """Keys changed as queues or counters (never also in ``set`` or ``deleted``): each
    applied with :func:`merge_value` to the value stored *now*, atomically with the rest.
    A key the merge leaves without a value is deleted (and then the emptiness rule
    applies). Only sent with the JSON serializer; the cookie store never gets any."""
    device: str | None = None
    """The device text (:mod:`asgi_sessions.devices`), written exactly when ``owner`` is:
    on a create and when ``owner_changed``; a merge otherwise keeps the stored one.
    Opaque to stores."""

    def device_after(self, stored_device: str | None) -> str | None:
        """The device text in force after merging into what is stored."""
        return self.device if self.owner_changed or self.create else stored_device

    def settings(self, stored_owner: str | None, stored_expiry: str | None) -> tuple[Any, Any]:
        """The owner and expiry setting in force after merging into what is stored."""
        return (
            self.owner if self.owner_changed or self.create else stored_owner,
            self.expiry if self.expiry_changed or self.create else stored_expiry,
        )


def merged_data(stored: Mapping[str, str], change: SessionWrite) -> dict[str, str]:
    """The data a merge leaves: ``stored`` with ``change``'s deletions, sets and merges."""
    data = {} if change.replace or change.create else dict(stored)
    for key in change.deleted:
        data.pop(key, None)
    data.update(change.set)
    for key, merge in change.merges.items():
        value = merge_value(data.get(key), merge)
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


_scan_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")


def split_json_list(text: str) -> list[str] | None:
    """The items of a compact JSON array as the texts they were written as (``None``
    when ``text`` is not an array). Never decodes and encodes again: what a store splices
    back reads byte-identical to what the serializer wrote."""
    if text[:1] != "[":
        return None
    if text == "[]":
        return []
    items: list[str] = []
    start = 1
    while True:
        try:
            _, end = _scan_json(text, start)
        except StopIteration:
            return None
        items.append(text[start:end])
        if text[end : end + 1] == "]":
            return items if end + 1 == len(text) else None
        if text[end : end + 1] != ",":
            return None
        start = end + 1


def _overlap(seen: tuple[str, ...], items: list[str]) -> int:
    """How many of the leading ``items`` are the last items this request ``seen``: the
    longest tail of ``seen`` that still leads (another request may have dropped the rest)."""
    for k in range(min(len(seen), len(items)), 0, -1):
        if list(seen[len(seen) - k :]) == items[:k]:
            return k
    return 0


def merge_value(stored: str | None, merge: Merge) -> str | None:
    """What one merge leaves under a key that holds ``stored`` now (``None``: no value).

    The reference every store's own code (Lua, SQL) mirrors. A counter adds its delta to
    a stored integer, or starts from 0 when the key is missing; a list drops the leading
    items this request saw (where they still lead) and appends its items, and leaves no
    value when nothing is left. A value another request replaced by one of another type
    meanwhile wins: the merge then applies as if it had come first and been overwritten.
    """
    if type(merge) is int:
        if stored is None:
            return str(merge)
        if _INTEGER.fullmatch(stored):
            return str(int(stored) + merge)
        return stored
    seen, appended = merge  # type: ignore[misc]
    items = [] if stored is None else split_json_list(stored)
    if items is None:
        return stored
    if seen:
        del items[: _overlap(seen, items)]
    items += appended
    return "[" + ",".join(items) + "]" if items else None


# WriteOutcome and Saved are built on every save and never changed; not frozen, because a
# frozen dataclass sets each field through object.__setattr__ (measured: 1.0 us a
# construction against 0.3 us).
@dataclass(slots=True)
class WriteOutcome:
    """What a store's write left behind."""

    alive: bool
    """``False`` when the merge left no data, so the record was deleted."""
    expires_at: float
    expiry: str | None
    """The expiry setting in force after the merge (the cookie's Max-Age depends on it)."""


@dataclass(slots=True)
class Saved:
    """A save's result as the session needs it: the key the cookie carries, and the outcome."""

    key: str
    alive: bool
    expires_at: float
    expiry: str | None


@dataclass(slots=True, frozen=True)
class SessionRecord:
    """A session read outside a request, like Django's ``Session.objects.get(pk=...)``."""

    session_key: str
    expire_date: datetime
    """When the record expires (aware, UTC)."""
    created: datetime
    owner: str | None
    _data: Mapping[str, str]
    _serializer: Serializer

    def get_decoded(self) -> dict[str, Any]:
        """The session's data as a plain dict."""
        loads = self._serializer.loads
        return {key: loads(value) for key, value in self._data.items()}


@dataclass(slots=True, frozen=True)
class OwnedSession:
    """One live session of an owner, as listed for "your devices" pages.

    ``entry.public_id == session.public_id`` tells the entry of the request's own session
    ("this device"); ``revoke(owner, entry.public_id)`` ends another.
    """

    public_id: str
    created: datetime
    last_saved: datetime
    """The record's last write: a save, or a renewal (``save_every_request``, at most
    once per ``renew_interval``). No request writes only to update it."""
    expire_date: datetime
    user_agent: str | None = None
    """The ``User-Agent`` of the request that signed in (``None``: not recorded)."""
    ip: str | None = None
    """Its client address or network, with ``record_ip=`` (``None`` otherwise)."""

    @property
    def last_seen(self) -> datetime:
        """When the device was last seen: the record's last write (``last_saved``)."""
        return self.last_saved

    @property
    def label(self) -> str:
        """ "Firefox on Linux", "Safari on iPhone" (the raw user agent without ua-parser)."""
        return device_label(self.user_agent)


@dataclass(slots=True, frozen=True)
class StoreStats:
    """What ``await store.stats()`` counts (``asgi-sessions stats URL`` prints it)."""

    sessions: int
    """Live sessions."""
    expired: int
    """Sessions past their end that are still stored (``clear_expired()`` removes them;
    0 for a store that deletes them itself, such as Redis)."""
    owners: int
    """Distinct owners with at least one live session."""
    size_bytes: int
    """What the store takes up: the database files, or the memory its records use."""
    size_where: Literal["disk", "memory"]
    """Whether ``size_bytes`` is on disk or in memory."""
    markers: int = 0
    """Live import markers: records an importer keeps so that an old library's cookie
    imports once (see :mod:`asgi_sessions.importers`). Not sessions, so not in
    ``sessions``; stores that cannot tell them apart cheaply report 0."""


#: The one key of an import marker's data (asgi_sessions.importers writes it).
IMPORT_MARKER_KEY = "_imported"


def is_import_marker(data: Mapping[str, object]) -> bool:
    """Whether a stored record's data is an importer's marker, not a session."""
    return len(data) == 1 and IMPORT_MARKER_KEY in data


Progress = Callable[[int], None]
"""Called by ``clear_expired(progress=...)`` with the number removed so far."""


class Store:
    """Base class of session stores. Subclasses implement the hooks below."""

    #: ``True`` when the data travels in the cookie itself (no server-side record).
    keeps_data_in_cookie = False
    #: ``True`` when the store itself gives a session a new key whenever its owner
    #: changes, even with ``rotate_on_owner_change=False`` (a Redis Cluster store: the key
    #: decides the slot, and a session must share its owner's).
    new_key_on_owner_change = False
    #: The app's lifecycle handlers: the middleware sets them (``events=``), or an app
    #: sets them itself for a store it uses without one; revocations and purges fire them.
    events: SessionEvents | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A backend's own revoke/revoke_all report what they ended, whoever calls them.
        for name in ("revoke", "revoke_all"):
            if name in cls.__dict__:
                setattr(cls, name, observed(cls.__dict__[name], "revoked"))

    def __init__(self, *, clock: Clock = time.time) -> None:
        self.clock = clock
        self._closed = False

    # -- hooks a backend implements -------------------------------------------------

    async def read(self, store_id: str) -> StoredSession | None:
        """Return the live record for ``store_id``, or ``None`` if missing or expired."""
        raise NotImplementedError(f"{type(self).__name__} must implement read()")

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        """Apply ``change`` atomically (see :class:`SessionWrite` for the rules)."""
        raise NotImplementedError(f"{type(self).__name__} must implement write()")

    async def move(self, store_id: str, new_id: str, change: SessionWrite) -> WriteOutcome:
        """Merge ``change`` into the live record and move it to ``new_id``, atomically.

        Raises ``SessionInterrupted`` if the record is gone, ``KeyCollision`` if
        ``new_id`` is taken by a live record.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement move()")

    async def remove(self, store_id: str) -> None:
        """Delete the record; a missing record is not an error."""
        raise NotImplementedError(f"{type(self).__name__} must implement remove()")

    async def purge_expired(self) -> int:
        """Delete expired records; return how many were deleted."""
        raise NotImplementedError(f"{type(self).__name__} must implement purge_expired()")

    async def purge_expired_batches(self) -> AsyncGenerator[int, None]:
        """Delete expired records in batches, yielding how many each batch deleted.

        A store that deletes in bounded batches (so no transaction holds a lock for long)
        overrides this, and ``clear_expired(progress=...)`` reports after each batch. The
        default is one batch: :meth:`purge_expired`.
        """
        yield await self.purge_expired()

    async def stats(self) -> StoreStats:
        """Count live and expired sessions and owners, and measure the store's size.

        Optional: a backend implements it with its own counting queries (it may scan the
        whole store: it is for operators, never for requests).
        """
        raise StoreCapabilityError(
            f"{type(self).__name__} does not report statistics: it does not implement "
            "Store.stats(). MemoryStore, SQLiteStore, RedisStore and PostgresStore do."
        )

    # -- the cookie -----------------------------------------------------------------

    def bind(self, signer: Signer) -> None:
        """Called by the middleware with its signer; stores that sign data keep it."""

    def verify_cookie(self, value: str, signer: Signer) -> tuple[str, bool] | None:
        """``(session key, stale)`` for a cookie value, or ``None`` if its signature fails.

        ``stale``: only an old secret verifies it, so the response signs it again with the
        current one (:meth:`reissue_key`). Runs before any I/O, so a forged cookie never
        costs a store lookup.
        """
        return signer.verify(value, max_length=_MAX_KEY_COOKIE)

    def reissue_key(self, session_key: str) -> str:
        """The key to sign again when an old secret signed its cookie (no store write).

        Server stores keep the key as it is; a store whose key carries data sealed with
        the secret (the encrypted cookie store) seals it again with the current one.
        """
        return session_key

    def encode_cookie(self, session_key: str, signer: Signer) -> str:
        """The cookie value for ``session_key``."""
        return signer.sign(session_key)

    def new_key(self, owner: str | None) -> str:
        """A fresh session key (256 random bits); a store may shape it, e.g. to route it."""
        key = secrets.token_urlsafe(_KEY_BYTES)
        while key[0] == "-":
            # One key in 64 would start with "-", which a shell command line (`show URL
            # KEY`) takes for an option; redrawing costs under 0.03 bits of entropy.
            key = secrets.token_urlsafe(_KEY_BYTES)
        return key

    # -- what sessions and users call -----------------------------------------------

    def _require_open(self) -> None:
        if self._closed:
            raise SessionStoreError(
                f"{self!r} is closed, so it cannot be used any more. Create a new store, "
                "or close it only when the app shuts down (the middleware closes only a "
                "store it created itself)."
            )

    async def load(self, session_key: str) -> StoredSession | None:
        """Load the live record for ``session_key``."""
        if self._closed:
            self._require_open()
        return await self.read(hash_key(session_key))

    async def create(self, change: SessionWrite) -> Saved:
        """Store a new session under a key minted here; return that key and the outcome.

        A store error raises :class:`OutcomeUnknown` with the key tried (maybe applied).
        """
        self._require_open()
        for attempt in range(_CREATE_ATTEMPTS):
            key = self.new_key(change.owner)
            try:
                with attempting(key):
                    outcome = await self.write(hash_key(key), change)
            except KeyCollision:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return Saved(key, outcome.alive, outcome.expires_at, outcome.expiry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def save(self, session_key: str, change: SessionWrite) -> Saved:
        """Merge ``change`` into the session stored under ``session_key``."""
        if self._closed:
            self._require_open()
        outcome = await self.write(hash_key(session_key), change)
        return Saved(session_key, outcome.alive, outcome.expires_at, outcome.expiry)

    async def rotate(self, session_key: str, change: SessionWrite) -> Saved:
        """Merge ``change``, then move the session to a new key; the old one is dead at once.

        A store error raises :class:`OutcomeUnknown` with the new key tried: the move may
        have happened (then the old key is dead) or not (then nothing changed).
        """
        self._require_open()
        for attempt in range(_CREATE_ATTEMPTS):
            key = self.new_key(change.owner)
            try:
                with attempting(key):
                    outcome = await self.move(hash_key(session_key), hash_key(key), change)
            except KeyCollision:
                if attempt == _CREATE_ATTEMPTS - 1:
                    raise
                continue
            return Saved(key, outcome.alive, outcome.expires_at, outcome.expiry)
        raise AssertionError("unreachable")  # pragma: no cover

    async def delete(self, session_key: str) -> None:
        """Delete the session stored under ``session_key``."""
        self._require_open()
        await self.remove(hash_key(session_key))

    async def get(
        self, session_key: str, *, serializer: Serializer | None = None
    ) -> SessionRecord | None:
        """Read a session outside a request: ``None`` if it is missing or expired."""
        stored = await self.load(session_key)
        if stored is None:
            return None
        data = stored.data
        if stored.decoded is not None:
            data = {k: JSONSerializer().dumps(v) for k, v in stored.decoded.items()}
        return SessionRecord(
            session_key=session_key,
            expire_date=_utc(stored.expires_at),
            created=_utc(stored.created_at),
            owner=stored.owner,
            _data=data,
            _serializer=serializer or JSONSerializer(),
        )

    async def clear_expired(self, *, progress: Progress | None = None) -> int:
        """Delete every expired session; return how many were removed.

        ``progress``, if given, is called with the number removed so far after each batch
        the store deletes (SQLite deletes ``purge_batch`` at a time).
        """
        self._require_open()
        removed = 0
        async with aclosing(self.purge_expired_batches()) as batches:
            async for count in batches:
                removed += count
                if progress is not None:
                    progress(removed)
                if self.events is not None:
                    await store_event(self, "expired", None, None, count)
        return removed

    # -- log out everywhere ---------------------------------------------------------

    async def list_sessions(self, owner: str) -> list[OwnedSession]:
        """The owner's live sessions, oldest first."""
        raise self._no_owner_index()

    async def revoke(self, owner: str, public_id: str) -> int:
        """End one of the owner's sessions by its public id; return 1, or 0 if not found."""
        raise self._no_owner_index()

    async def revoke_all(self, owner: str, *, keep: str | None = None) -> int:
        """End all of the owner's sessions except the one whose public id is ``keep``."""
        raise self._no_owner_index()

    def _no_owner_index(self) -> StoreCapabilityError:
        return StoreCapabilityError(
            f"{type(self).__name__} keeps no index of sessions by owner, so it cannot list or "
            "revoke them. Use MemoryStore, SQLiteStore, RedisStore or PostgresStore for that."
        )

    # -- lifecycle ------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release connections; the store refuses use afterwards. Safe to call twice."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # helpers for backends

    @staticmethod
    def owned(
        store_id: str,
        created_at: float,
        updated_at: float,
        expires_at: float,
        device: str | None = None,
    ) -> OwnedSession:
        """Build an :class:`OwnedSession` from stored figures and device text."""
        user_agent, ip = decode_device(device)
        return OwnedSession(
            public_id=public_id_for(store_id),
            created=_utc(created_at),
            last_saved=_utc(updated_at),
            expire_date=_utc(expires_at),
            user_agent=user_agent,
            ip=ip,
        )
