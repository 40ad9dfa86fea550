"""TrackedDict: a ``dict`` that refuses access until loaded and records top-level changes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import SessionNotLoaded, SessionStoreError

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

__all__ = ["Stored", "TrackedDict"]

_MISSING: Any = object()


class Stored:
    """A value as the store holds it (the serializer's text), decoded when first used.

    A request that reads one key of a large session decodes that key only, and a save
    that rewrites a key nobody read writes the text back without decoding it at all.
    """

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


class TrackedDict(dict[str, Any]):
    """The mapping half of a session: Django's change-tracking rules on a real ``dict``.

    It subclasses ``dict`` (rather than wrapping one) so that ``json.dumps(session)`` and
    ``JSONResponse(request.session)`` work as with Starlette's session; every method that
    reads checks that the data is loaded, and every mutator records the key it changed.
    """

    __slots__ = (
        "_all_dirty",
        "_changed",
        "_decode",
        "_loaded",
        "_modified",
        "_replace",
        "_undecoded",
        "accessed",
    )

    def __init__(self) -> None:
        self._loaded = False
        self.accessed = False
        self._modified = False

    def _reset_changes(self) -> None:
        self._undecoded: set[str] = set()
        self._changed: set[str] = set()
        self._replace = False
        self._all_dirty = False

    def _hold_encoded(self, stored: Mapping[str, str], decode: Callable[[str], Any]) -> None:
        """Take the store's encoded values; each is decoded on first use."""
        dict.update(self, {key: Stored(text) for key, text in stored.items()})
        self._undecoded = set(stored)
        self._decode = decode

    def _decoded(self, key: str, value: Stored) -> Any:
        try:
            decoded = self._decode(value.text)
        except ValueError as exc:
            raise SessionStoreError(
                f"The stored value under {key!r} cannot be decoded ({exc}). Was the "
                "serializer changed? Flush this session or clear the store."
            ) from exc
        if dict.get(self, key) is value:
            dict.__setitem__(self, key, decoded)
        self._undecoded.discard(key)
        return decoded

    def _decode_all(self) -> None:
        for key in list(self._undecoded):
            value = dict.__getitem__(self, key)
            if type(value) is Stored:
                self._decoded(key, value)

    def _require_loaded(self, operation: str) -> None:
        if not self._loaded:
            raise SessionNotLoaded(operation)
        self.accessed = True

    # -- reading -----------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if not self._loaded:
            raise SessionNotLoaded(f"reading {key!r}")
        self.accessed = True
        value = dict.__getitem__(self, key)
        if type(value) is Stored:
            return self._decoded(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else ``default``."""
        if not self._loaded:
            raise SessionNotLoaded(f"reading {key!r}")
        self.accessed = True
        value = dict.get(self, key, default)
        if type(value) is Stored:
            return self._decoded(key, value)
        return value

    def __contains__(self, key: object) -> bool:
        if not self._loaded:
            raise SessionNotLoaded(f"checking for {key!r}")
        self.accessed = True
        return dict.__contains__(self, key)

    def __len__(self) -> int:
        if not self._loaded:
            raise SessionNotLoaded("len()")
        self.accessed = True
        return dict.__len__(self)

    def __iter__(self) -> Iterator[str]:
        if not self._loaded:
            raise SessionNotLoaded("iteration")
        self.accessed = True
        return dict.__iter__(self)

    def __reversed__(self) -> Iterator[str]:
        self._require_loaded("iteration")
        return dict.__reversed__(self)

    def _require_decoded(self, operation: str) -> None:
        self._require_loaded(operation)
        if self._undecoded:
            self._decode_all()

    def keys(self) -> dict_keys[str, Any]:
        """The keys, as a live view."""
        self._require_loaded("keys()")
        return dict.keys(self)

    def values(self) -> dict_values[str, Any]:
        """The values, as a live view."""
        self._require_decoded("values()")
        return dict.values(self)

    def items(self) -> dict_items[str, Any]:
        """The ``(key, value)`` pairs, as a live view (``json.dumps`` goes through this)."""
        self._require_decoded("items()")
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A plain ``dict`` copy of the data."""
        self._require_decoded("copy()")
        return dict(dict.items(self))

    def __eq__(self, other: object) -> bool:
        self._require_decoded("comparison")
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._require_decoded("comparison")
        return dict.__ne__(self, other)

    __hash__ = None

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._require_decoded("the | operator")
        return dict(dict.items(self)) | other  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        self._require_decoded("the | operator")
        return other | dict(dict.items(self))  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        if not self._loaded:
            return f"<{type(self).__name__} (not loaded)>"
        if self._undecoded:
            self._decode_all()
        return f"<{type(self).__name__} {dict.__repr__(self)}>"

    # -- writing -----------------------------------------------------------------------

    def _mark(self, key: str) -> None:
        self._changed.add(key)
        self._modified = True
        if self._undecoded:
            self._undecoded.discard(key)

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._loaded:
            raise SessionNotLoaded(f"setting {key!r}")
        if not isinstance(key, str):
            raise TypeError(f"Session keys must be str, not {type(key).__name__} ({key!r}).")
        dict.__setitem__(self, key, value)
        self._mark(key)

    def __delitem__(self, key: str) -> None:
        self._require_loaded(f"deleting {key!r}")
        dict.__delitem__(self, key)
        self._mark(key)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; marks the session modified only if it was there."""
        self._require_loaded(f"pop({key!r})")
        if dict.__contains__(self, key):
            value = dict.__getitem__(self, key)
            if type(value) is Stored:
                value = self._decoded(key, value)
            dict.__delitem__(self, key)
            self._mark(key)
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last inserted item."""
        self._require_loaded("popitem()")
        key, value = dict.popitem(self)
        if type(value) is Stored:
            value = self._decoded(key, value)
        self._mark(key)
        return key, value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Return ``self[key]``, inserting ``default`` first if it is missing."""
        self._require_loaded(f"setdefault({key!r})")
        if dict.__contains__(self, key):
            return self[key]
        self[key] = default
        return default

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """As ``dict.update``; always marks the session modified."""
        self._require_loaded("update()")
        items = other.items() if isinstance(other, Mapping) else other
        for key, value in items:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value
        self._modified = True

    def __ior__(self, other: Any) -> TrackedDict:  # type: ignore[override]
        self.update(other)
        return self

    def clear(self) -> None:
        """Remove every key; the save replaces the whole stored record."""
        self._require_loaded("clear()")
        dict.clear(self)
        self._changed.clear()
        self._undecoded.clear()
        self._replace = True
        self._modified = True

    @property
    def modified(self) -> bool:
        """Whether the session will be saved. Set it to ``True`` after a nested mutation."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value
        # Nested changes are invisible, so a forced save writes every key.
        self._all_dirty = value
