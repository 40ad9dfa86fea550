"""Django 5.1's asynchronous session API (``aget``, ``aset``, ...), on :class:`Session`.

Each method loads the session first if it is not loaded yet, then does what its Django
namesake does, so an async Django view ports by changing ``request.session`` into
``request.state.session``. Where we differ from Django on purpose, the docstring says so
(see also the table in the README).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .expiry import encode_expiry, resolve_expires_at

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

    from .stores.base import Store

__all__ = ["DjangoAsyncAPI", "LoadedSession", "SessionSettings"]

_NOT_GIVEN: Any = object()


class LoadedSession(Protocol):
    """What the async API calls on a loaded session: public methods of ``Session``."""

    accessed: bool

    def __contains__(self, key: object, /) -> bool: ...
    def __setitem__(self, key: str, value: Any, /) -> None: ...
    def get(self, key: str, default: Any = None, /) -> Any: ...
    def pop(self, key: str, default: Any = ..., /) -> Any: ...
    def setdefault(self, key: str, default: Any = None, /) -> Any: ...
    def update(self, other: Any = (), /, **kwargs: Any) -> None: ...
    def increment(self, key: str, by: int = 1) -> int: ...
    def keys(self) -> dict_keys[str, Any]: ...
    def values(self) -> dict_values[str, Any]: ...
    def items(self) -> dict_items[str, Any]: ...
    def set_expiry(self, value: int | timedelta | datetime | None) -> None: ...
    def get_expire_at_browser_close(self) -> bool: ...
    async def save(self) -> None: ...


class SessionSettings(Protocol):
    """What the async API reads of the middleware's settings (``SessionConfig``)."""

    @property
    def store(self) -> Store: ...
    @property
    def default_age(self) -> int: ...


class DjangoAsyncAPI:
    """The ``a``-prefixed methods of Django's ``SessionBase``, for ``Session`` to inherit.

    This module imports nothing of the session's: what the methods use of the class that
    inherits them is declared below, and ``Session`` provides it.
    """

    __slots__ = ()

    if TYPE_CHECKING:  # what the inheriting class provides (Session does)
        # Django's keyword arguments (aget_expiry_age(modification=, expiry=)) need the
        # clock, max_age and the session's own end for a given save time: no public
        # method gives those, and a new one would widen the public API for this alone.
        _config: SessionSettings

        async def load(self) -> LoadedSession: ...
        async def flush(self) -> None: ...
        async def cycle_key(self) -> None: ...
        def _would_expire_at(self, now: float) -> float: ...

    # -- the mapping -------------------------------------------------------------------

    async def aget(self, key: str, default: Any = None) -> Any:
        """``session.get(key, default)``, loading first."""
        return (await self.load()).get(key, default)

    async def aset(self, key: str, value: Any) -> None:
        """``session[key] = value``, loading first."""
        (await self.load())[key] = value

    async def apop(self, key: str, default: Any = _NOT_GIVEN) -> Any:
        """``session.pop(key[, default])``, loading first: ``KeyError`` if the key is
        missing and no default is given; marks the session modified only if it was there."""
        session = await self.load()
        if default is _NOT_GIVEN:
            return session.pop(key)
        return session.pop(key, default)

    async def asetdefault(self, key: str, value: Any) -> Any:
        """``session.setdefault(key, value)``, loading first."""
        return (await self.load()).setdefault(key, value)

    async def aincrement(self, key: str, by: int = 1) -> int:
        """``session.increment(key, by)``, loading first (not in Django: a counter whose
        concurrent increments all count)."""
        return (await self.load()).increment(key, by)

    async def aupdate(self, dict_: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> None:
        """``session.update(dict_)``, loading first; marks the session modified, as in
        Django, but only the keys given are written (none for an empty update)."""
        (await self.load()).update(dict_)

    async def ahas_key(self, key: str) -> bool:
        """``key in session``, loading first."""
        return key in await self.load()

    async def akeys(self) -> dict_keys[str, Any]:
        """``session.keys()`` (a live view), loading first."""
        return (await self.load()).keys()

    async def avalues(self) -> dict_values[str, Any]:
        """``session.values()`` (a live view), loading first."""
        return (await self.load()).values()

    async def aitems(self) -> dict_items[str, Any]:
        """``session.items()`` (a live view), loading first."""
        return (await self.load()).items()

    # -- the record ---------------------------------------------------------------------

    async def aflush(self) -> None:
        """``await session.flush()``: data cleared, record deleted, cookie removed."""
        await self.flush()

    async def acycle_key(self) -> None:
        """``await session.cycle_key()``: a new key, the same data, the old key dead.

        Unlike Django, a session with no data is not stored under the new key (empty
        sessions are never written).
        """
        await self.cycle_key()

    async def asave(self) -> None:
        """``await session.save()``, loading first.

        Unlike Django, it writes only what changed (nothing when nothing did, and no
        record for a new, empty session), and there is no ``must_create``: the store
        mints keys and never reuses one.
        """
        await (await self.load()).save()

    # -- expiry -------------------------------------------------------------------------

    async def aset_expiry(self, value: int | timedelta | datetime | None) -> None:
        """``session.set_expiry(value)``, loading first."""
        (await self.load()).set_expiry(value)

    async def aget_expiry_age(
        self, *, modification: datetime | None = None, expiry: Any = _NOT_GIVEN
    ) -> int:
        """Seconds from ``modification`` (default: now) until the session expires.

        Django's keyword arguments: ``modification``, an aware datetime standing for the
        last save; ``expiry``, a datetime, seconds, or ``None``, instead of the session's
        own setting (then nothing is loaded and ``absolute_timeout`` is not applied, as
        Django computes it from the arguments alone). No setting, or 0, gives ``max_age``
        (14 days when ``max_age=None``). Rounded to whole seconds (Django truncates).
        """
        at = await _moment(self, modification, expiry)
        return round(await _expires_at(self, at, expiry) - at)

    async def aget_expiry_date(
        self, *, modification: datetime | None = None, expiry: Any = _NOT_GIVEN
    ) -> datetime:
        """When the session expires if saved at ``modification`` (aware, UTC); the same
        keyword arguments as :meth:`aget_expiry_age`."""
        at = await _moment(self, modification, expiry)
        return datetime.fromtimestamp(await _expires_at(self, at, expiry), UTC)

    async def aget_expire_at_browser_close(self) -> bool:
        """``session.get_expire_at_browser_close()``, loading first."""
        return (await self.load()).get_expire_at_browser_close()


async def _moment(session: DjangoAsyncAPI, modification: datetime | None, expiry: Any) -> float:
    """``modification`` as a timestamp (now by default); loads unless ``expiry`` is given."""
    if expiry is _NOT_GIVEN:
        loaded = await session.load()
        loaded.accessed = True  # Django reads the stored setting, which counts as access
    if modification is None:
        return session._config.store.clock()
    if modification.tzinfo is None:
        raise ValueError(
            f"modification must be an aware datetime, not the naive {modification!r}: "
            "use datetime.now(UTC)."
        )
    return modification.timestamp()


async def _expires_at(session: DjangoAsyncAPI, at: float, expiry: Any) -> float:
    if expiry is _NOT_GIVEN:
        return session._would_expire_at(at)
    setting = encode_expiry(expiry, at)
    return resolve_expires_at(setting, at, at + session._config.default_age, None)
