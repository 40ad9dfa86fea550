"""The stored side of the model: records, expiry arithmetic, what one request holds.

Everything here follows ../notes/contract-v2.md ("A session record"); the comments quote
the rule each line encodes.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from tests.model.program import Options

FOURTEEN_DAYS = 14 * 24 * 3600


def encoded(value: Any) -> str:
    """The JSON form the contract compares ("its JSON changed since load")."""
    return json.dumps(value, sort_keys=True)


@dataclass
class Record:
    """One stored session as the contract says it must be."""

    rid: int
    data: dict[str, Any]
    owner: str | None
    expiry: str | None
    """None (middleware default) | "s:<n>" (inactivity; "s:0" browser session) | "a:<ts>"."""
    created_at: float
    updated_at: float
    expires_at: float
    key: str | None = None
    """Learned from what the implementation shows (session_key, Set-Cookie)."""
    deleted: bool = False
    slot_owner: str | None = None
    """On a store whose keys name their owner's slot: the owner the key was minted for."""
    device: str | None = None
    """Issue 25: the user agent of the request that stored the owner (None: no owner)."""
    writes: int = 0
    """How many times the record was written since it was made: which write a cookie or a
    request knows (two writes in one second of the model's clock share ``updated_at``)."""

    def alive(self, now: float) -> bool:
        # "A record is alive while now < expires_at."
        return not self.deleted and now < self.expires_at

    def label(self) -> str:
        return f"#{self.rid}"


def user_agent(request_number: int) -> str:
    """The ``User-Agent`` the harness sends with request ``request_number`` (issue 25)."""
    return f"model-request-{request_number}"


def default_age(options: Options) -> int:
    # "default_age = max_age, or 14 days when max_age=None"
    return FOURTEEN_DAYS if options.max_age is None else options.max_age


def expires_at(options: Options, setting: str | None, now: float, created_at: float) -> float:
    """contract-v2: expires_at after any write at time ``now``."""
    if setting is not None and setting.startswith("a:"):
        base = float(setting[2:])
    elif setting is not None and int(setting[2:]) > 0:
        base = now + int(setting[2:])
    else:
        base = now + default_age(options)
    if options.absolute_timeout is not None:
        base = min(base, created_at + options.absolute_timeout)
    return base


def idle_window(options: Options, setting: str | None) -> int:
    """The inactivity window that applies to a session: n for "s:n", else default_age."""
    if setting is not None and setting.startswith("s:") and int(setting[2:]) > 0:
        return int(setting[2:])
    return default_age(options)


def renew_interval(options: Options, setting: str | None = None) -> float:
    # DESIGN.md "Expiry": renew_interval, never more than a tenth of the idle window that
    # applies to that session (set_expiry(n), the stored setting, or max_age). Issue 22.
    return min(options.renew_interval, max(idle_window(options, setting), 0) / 10)


def browser_session(options: Options, setting: str | None) -> bool:
    # "no Max-Age at all when the effective setting is browser-session ("s:0", or None
    # with max_age=None), even with absolute_timeout"
    return setting == "s:0" or (setting is None and options.max_age is None)


def encode_setting(kind: str, seconds: int, now: float) -> str | None:
    """What ``set_expiry`` stores: int n -> "s:n"; 0 -> "s:0"; None -> None; a timedelta
    counts from now and an aware datetime is a moment: both "a:<ts>" (DESIGN.md, and the
    docstring fix of issue 13 item 11)."""
    if kind == "int":
        return f"s:{seconds}"
    if kind == "zero":
        return "s:0"
    if kind == "none":
        return None
    return f"a:{now + seconds!r}"


@dataclass
class Held:
    """What one request's session holds: its view of the data and what it changed."""

    rid: int | None = None
    """The record the session is bound to (``None``: no key yet)."""
    local: dict[str, Any] = field(default_factory=dict)
    owner: str | None = None
    expiry: str | None = None
    known_expires_at: float = 0.0
    """The record's end as this request last saw it (loaded or written): the line between
    "expired" and "deleted" when a save finds the record gone."""
    updated_at: float = 0.0
    """The record's last write as this request knows it (loaded, or its own write)."""
    writes: int = 0
    """``Record.writes`` of that write."""
    pending: set[str] = field(default_factory=set)
    replace: bool = False
    all_present: bool = False
    owner_changed: bool = False
    expiry_changed: bool = False
    baselines: dict[str, str] = field(default_factory=dict)
    """JSON of each list/dict value handed out to the app (or assigned by it), as it was
    when handed out, or as the request's last write wrote it."""
    refs: dict[str, Any] = field(default_factory=dict)
    """The list or dict the view holds under each key (see view_ops.remember)."""
    wrote: bool = False
    """This request wrote the record it is bound to: the response sets the cookie."""
    write_expires_at: float = 0.0
    write_setting: str | None = None
    rotated: bool = False
    """This request already rotated the session's key (cycle_key, owner change)."""
    modified: bool = False
    """``session.modified``: any change, set_expiry, owner change, clear, flush, cycle_key."""
    seen: dict[str, str] = field(default_factory=dict)
    """Issue 23: each key's JSON as loaded or last written by this request."""
    deltas: dict[str, int] = field(default_factory=dict)
    fresh: set[str] = field(default_factory=set)

    def adopt(self, data: dict[str, Any]) -> None:
        """The view of a record just loaded."""
        self.local = copy.deepcopy(data)
        self.seen = {key: encoded(value) for key, value in data.items()}

    def handout(self, key: str) -> None:
        value = self.local.get(key)
        if isinstance(value, list | dict) and key not in self.baselines:
            self.baselines[key] = encoded(value)

    def mark(self, key: str) -> None:
        self.pending.add(key)
        self.modified = True

    def nested_changes(self) -> set[str]:
        return {
            key
            for key, before in self.baselines.items()
            if key in self.local and encoded(self.local[key]) != before
        }

    def has_pending(self, detect_nested: bool) -> bool:
        return bool(
            self.pending
            or self.replace
            or self.all_present
            or self.owner_changed
            or self.expiry_changed
            or (detect_nested and self.nested_changes())
        )

    def changes(self) -> tuple[dict[str, Any], set[str]]:
        """(keys to write with their values, keys to remove) for a save now."""
        written = set(self.local) if self.all_present else self.pending & set(self.local)
        written |= self.nested_changes()
        removed = {key for key in self.pending if key not in self.local}
        return {key: copy.deepcopy(self.local[key]) for key in written}, removed

    def consumed(self) -> None:
        """A write took the pending changes. The containers the view was handed or assigned
        stay watched, now against what the write wrote (DESIGN.md: nested changes are
        found "also across an explicit await session.save()"; issue 22 item 9)."""
        watched = self.baselines.keys() | self.pending
        self.baselines = {
            key: encoded(self.local[key])
            for key in watched
            if isinstance(self.local.get(key), list | dict)
        }
        self.pending.clear()
        self.deltas.clear()
        self.fresh.clear()
        self.replace = self.all_present = False
        self.owner_changed = self.expiry_changed = False

    def drop(self) -> None:
        """No key, no data: after flush, an expired save, or a merge that left nothing."""
        self.consumed()
        self.rid = None
        self.local.clear()
        self.baselines.clear()
        self.seen.clear()
        self.owner = self.expiry = None
        self.wrote = False
