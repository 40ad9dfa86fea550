"""TrackedDict: a ``dict`` that refuses access until loaded and records top-level changes.

It also remembers which mutable values (lists, dicts) it handed out, so that a change
made to one of them in place can be found at save time by comparing its encoding with
the one loaded (:meth:`TrackedDict._nested_changes`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from .errors import SessionNotLoaded
from .stores.base import Merge, split_json_list

if TYPE_CHECKING:
    from _collections_abc import dict_items, dict_keys, dict_values

__all__ = ["TrackedDict"]

_MISSING: Any = object()
# Values the app can change in place without the session seeing it. JSON decodes to these
# two; anything else a view stores is encoded again at save time anyway.
_CONTAINERS = (list, dict)
# Values whose encoding cannot change after assignment: encoded once, when set.
_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def _unstorable(key: str, exc: Exception) -> TypeError:
    """The error for a value under ``key`` that the serializer refused with ``exc``."""
    return TypeError(
        f"The session value under {key!r} cannot be stored: {exc}. Store only "
        "values the serializer accepts (for JSON: str, int, float, bool, None, "
        "and lists and dicts of them with str keys)."
    )


class TrackedDict(dict[str, Any]):
    """The mapping half of a session: Django's change-tracking rules on a real ``dict``.

    It subclasses ``dict`` (rather than wrapping one) so that ``json.dumps(session)``,
    ``JSONResponse(request.session)`` and C encoders such as orjson see the data as they
    would a plain dict: values are decoded when the session loads, never placeholders.
    Every method that reads checks that the data is loaded, and every mutator records the
    key it changed. Each value is encoded when it is assigned, so a value the serializer
    refuses raises ``TypeError`` on the view's own line, before any I/O.
    """

    __slots__ = (
        "_all_dirty",
        "_assigned",
        "_changed",
        "_deltas",
        "_dumps",
        "_fresh_lists",
        "_handed",
        "_handed_all",
        "_lazy_texts",
        "_loaded",
        "_modified",
        "_replace",
        "_texts",
        "accessed",
    )

    def __init__(self) -> None:
        self._loaded = False
        self.accessed = False
        self._modified = False

    def _reset_changes(self, dumps: Callable[[Any], str]) -> None:
        self._dumps = dumps
        self._texts: Mapping[str, str] = {}
        """The encoded form of each value as last loaded or saved (the store's own mapping
        for server stores: never changed in place)."""
        self._lazy_texts = False
        """``True`` when the store handed decoded values (the cookie store): a value's
        encoded form is then taken when it is first handed out, in a dict of our own."""
        self._assigned: dict[str, str] = {}
        """The encoded form of values assigned since (final only for immutable values)."""
        self._changed: set[str] = set()
        self._deltas: dict[str, int] = {}
        """Counters changed only by ``increment()`` since the last save: key -> delta."""
        self._fresh_lists: set[str] = set()
        """Keys this request created as a new empty list (assigned ``[]`` where it held
        nothing): appending to them is appending, not a reassignment."""
        self._handed: set[str] = set()
        self._handed_all = False
        self._replace = False
        self._all_dirty = False

    def _require_loaded(self, operation: str) -> None:
        if not self._loaded:
            raise SessionNotLoaded(operation)
        self.accessed = True

    def _encode(self, key: str, value: Any) -> str:
        try:
            return self._dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _unstorable(key, exc) from exc

    # -- reading -----------------------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        if not self._loaded:
            raise SessionNotLoaded(f"reading {key!r}")
        self.accessed = True
        value = dict.__getitem__(self, key)
        if type(value) in _CONTAINERS:
            self._hand_out(key, value)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        """``self[key]`` if present, else ``default``."""
        if not self._loaded:
            raise SessionNotLoaded(f"reading {key!r}")
        self.accessed = True
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return default
        if type(value) in _CONTAINERS:
            self._hand_out(key, value)
        return value

    def _hand_out(self, key: str, value: Any) -> None:
        """Remember that the app holds ``value`` and may change it in place."""
        self._handed.add(key)
        if self._lazy_texts and key not in self._texts and key not in self._changed:
            self._texts[key] = self._encode(key, value)  # type: ignore[index]

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

    def _hand_out_all(self, operation: str) -> None:
        self._require_loaded(operation)
        if not self._handed_all:
            self._handed_all = True
            if self._lazy_texts:
                for key, value in dict.items(self):
                    if type(value) in _CONTAINERS:
                        self._hand_out(key, value)

    def keys(self) -> dict_keys[str, Any]:
        """The keys, as a live view."""
        self._require_loaded("keys()")
        return dict.keys(self)

    def values(self) -> dict_values[str, Any]:
        """The values, as a live view."""
        self._hand_out_all("values()")
        return dict.values(self)

    def items(self) -> dict_items[str, Any]:
        """The ``(key, value)`` pairs, as a live view (``json.dumps`` goes through this)."""
        self._hand_out_all("items()")
        return dict.items(self)

    def copy(self) -> dict[str, Any]:
        """A plain (shallow) ``dict`` copy of the data."""
        self._hand_out_all("copy()")
        return dict(dict.items(self))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickle and copy.deepcopy see the data as a plain dict: the request, its store
        # and its cookie are not part of the value.
        return (dict, (self.copy(),))

    def __eq__(self, other: object) -> bool:
        self._require_loaded("comparison")
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        self._require_loaded("comparison")
        return dict.__ne__(self, other)

    __hash__ = None

    def __or__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.copy() | other  # type: ignore[no-any-return]

    def __ror__(self, other: Any) -> dict[str, Any]:  # type: ignore[override]
        return other | self.copy()  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        if not self._loaded:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {dict.__repr__(self)}>"

    # -- writing -----------------------------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        if not self._loaded:
            raise SessionNotLoaded(f"setting {key!r}")
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"Session keys must be str, not {type(key).__name__} ({key!r}).")
            key = str(key)  # a str subclass (an enum, say) is stored as the plain string
        if not key.isascii():
            try:
                key.encode()
            except UnicodeEncodeError as exc:
                raise TypeError(f"The session key {key!r} cannot be stored: {exc}.") from exc
        if "\x00" in key:
            # Refused on every store alike: PostgreSQL's text cannot hold U+0000.
            raise TypeError(
                f"The session key {key!r} cannot be stored: it contains a NUL character. "
                "Use a key without one."
            )
        # Encoded now, so an unstorable value fails here, in the view, not at save time
        # (_encode's body, without the call: this runs on every assignment).
        try:
            self._assigned[key] = self._dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _unstorable(key, exc) from exc
        if type(value) is list and not value and not dict.__contains__(self, key):
            # A new empty list (``setdefault(k, [])``, or sqladmin's ``if k not in s:
            # s[k] = []``): what is appended to it is appended to the list, not a
            # reassignment of it.
            self._fresh_lists.add(key)
        elif self._deltas or self._fresh_lists:
            self._deltas.pop(key, None)
            self._fresh_lists.discard(key)
        dict.__setitem__(self, key, value)
        self._changed.add(key)
        self._modified = True
        if type(value) not in _IMMUTABLE:
            # The view keeps a reference it may change in place before the save.
            self._handed.add(key)

    def _mark_deleted(self, key: str) -> None:
        self._changed.add(key)
        self._modified = True
        self._assigned.pop(key, None)
        if self._deltas or self._fresh_lists:
            self._deltas.pop(key, None)
            self._fresh_lists.discard(key)

    def __delitem__(self, key: str) -> None:
        self._require_loaded(f"deleting {key!r}")
        dict.__delitem__(self, key)
        self._mark_deleted(key)

    def pop(self, key: str, default: Any = _MISSING) -> Any:
        """Remove ``key`` and return its value; marks the session modified only if it was there."""
        self._require_loaded(f"pop({key!r})")
        if dict.__contains__(self, key):
            value = dict.pop(self, key)
            self._mark_deleted(key)
            return value
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, Any]:
        """Remove and return the last inserted item."""
        self._require_loaded("popitem()")
        key, value = dict.popitem(self)
        self._mark_deleted(key)
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
        self._assigned.clear()
        self._deltas.clear()
        self._fresh_lists.clear()
        self._replace = True
        self._modified = True

    @property
    def modified(self) -> bool:
        """Whether the session will be saved. Set it to ``True`` after a nested mutation."""
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = value
        # "Save every present key"; deletions made in this request stay pending.
        self._all_dirty = value

    # -- what a save writes ------------------------------------------------------------

    def _text(self, key: str, value: Any) -> str:
        """The encoded form of ``value`` (stored under ``key``) as of now."""
        if type(value) in _IMMUTABLE:
            text = self._assigned.get(key)
            if text is None:
                text = self._texts.get(key)
            if text is not None:
                return text
        return self._encode(key, value)

    def _nested_changes(self) -> dict[str, str]:
        """Loaded lists and dicts that were handed out and changed in place since."""
        keys = dict.keys(self) if self._handed_all else self._handed
        if not keys:
            return {}
        changed = self._changed
        texts = self._texts
        found: dict[str, str] = {}
        for key in keys:
            if key in changed:
                continue  # written anyway
            value = dict.get(self, key, _MISSING)
            if type(value) not in _CONTAINERS:
                continue
            text = self._encode(key, value)
            if text != texts.get(key):
                found[key] = text
        return found

    def increment(self, key: str, by: int = 1) -> int:
        """Add ``by`` to the integer under ``key`` (0 if missing) and return the new value.

        The save sends the delta, which the store adds to whatever it holds then, so
        concurrent increments all count. A value that is not an integer raises
        ``TypeError`` here; one that another request replaced meanwhile by a non-integer
        wins (the increment then counts as made before that replacement).
        """
        self._require_loaded(f"increment({key!r})")
        if type(by) is not int:
            raise TypeError(f"increment() adds an int, not {type(by).__name__} ({by!r}).")
        current = dict.get(self, key, 0)
        if type(current) is not int:
            raise TypeError(
                f"The session value under {key!r} is {current!r}, not an int, so it cannot "
                "be incremented. Assign it instead, or keep counters under their own key."
            )
        value = current + by
        if key in self._changed and key not in self._deltas:
            self[key] = value  # assigned or deleted in this request already: a plain set
            return value
        dict.__setitem__(self, key, value)
        self._assigned[key] = str(value)
        self._changed.add(key)
        self._deltas[key] = self._deltas.get(key, 0) + by
        self._modified = True
        return value

    def _list_merge(self, key: str, value: Any) -> Merge | None:
        """The queue change that turns the list loaded under ``key`` into ``value``
        (``_MISSING``: the key was popped), or ``None`` if it is not one."""
        text = self._texts.get(key)
        loaded = None if text is None else split_json_list(text)
        fresh = key in self._fresh_lists
        if fresh and loaded is None:
            loaded = []
        if loaded is None:
            return None
        if value is _MISSING:
            return (tuple(loaded), ())
        if type(value) is not list:
            return None
        encode = self._dumps
        try:
            now = [encode(item) for item in value]
        except (TypeError, ValueError, RecursionError):
            return None  # the full encoding (a set) reports it, naming the key
        if fresh:
            # Created empty by setdefault() (after popping what was loaded, if anything):
            # whatever it holds now was appended.
            return (tuple(loaded), tuple(now)) if loaded or now else None
        n = len(loaded)
        for k in range(n + 1):
            kept = n - k
            if now[:kept] == loaded[k:]:
                appended = now[kept:]
                if k == n and n and appended:
                    return None  # nothing kept and new items: a replacement, not a queue
                return (tuple(loaded[:k]), tuple(appended))
        return None  # pragma: no cover - k == n always matches

    def _merges(self, nested: Mapping[str, str]) -> dict[str, Merge]:
        """Which pending changes go to the store as merges (server stores, JSON only)."""
        found: dict[str, Merge] = dict(self._deltas)
        candidates = [key for key in self._changed if key not in found]
        candidates += nested
        for key in candidates:
            if key in self._changed and key not in self._fresh_lists:
                # Assigned: last writer wins. Popped or deleted: drop what it saw.
                if dict.__contains__(self, key):
                    continue
            merge = self._list_merge(key, dict.get(self, key, _MISSING))
            if merge is not None:
                found[key] = merge
        return found
