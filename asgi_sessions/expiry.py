"""Expiry: how a session's ``set_expiry()`` choice is kept, and when a record ends.

A leaf: it imports nothing of the package, so the session layer and every store can use
it without either depending on the other.

The choice (the *expiry setting*) is stored with the record as a short opaque string,
this encoding and no other (:func:`encode_expiry` writes it):

- ``None``: no choice; the middleware's ``max_age`` applies (``set_expiry(None)``);
- ``"s:<n>"``: ``n`` whole seconds of inactivity, counted again from every save
  (``set_expiry(n)``); ``"s:0"`` is the browser-session cookie, whose record the server
  keeps as long as a default one;
- ``"a:<t>"``: a fixed moment, ``t`` seconds since the epoch as Python's ``repr`` of a
  float (``set_expiry(datetime)`` or ``set_expiry(timedelta)``, counted from the call).

When a record ends is decided by the store at each write, from the setting *stored* at
that moment unless the writing request changed it (a concurrent request's stale copy must
never win). :func:`resolve_expires_at` is that rule, and the only copy of it in Python:
memory, SQLite and the cookie store call it (SQLite inside its ``BEGIN IMMEDIATE``
transaction; its in-place renewal, ``_RENEW``, only touches a record whose setting is
``None``). Two stores cannot call Python inside their atomic write, and mirror the rule:

- Redis: the "When the record ends" block of ``stores/lua/write.lua`` (every write but
  the short one) and of ``stores/lua/update.lua`` (keys set, nothing else); the caller
  (``stores/redis.py``) sends the default already capped;
- PostgreSQL: the SQL function ``{expires_at}`` (``<table>_expires_at``) in
  ``stores/postgres_schema.sql``, which the save function ``{write}`` calls.

``tests/stores/test_expiry_agreement.py`` writes a table of cases through every store and
checks that each ends its record where :func:`resolve_expires_at` says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = [
    "encode_expiry",
    "ends_with_browser",
    "idle_seconds",
    "renewal_interval",
    "resolve_expires_at",
]

_USAGE = "set_expiry() takes seconds, a timedelta, a datetime, 0 or None"


def encode_expiry(value: int | timedelta | datetime | None, now: float) -> str | None:
    """The stored form of a ``set_expiry()`` argument; raises on anything else.

    A ``timedelta`` counts from ``now`` (a fixed moment), as a ``datetime`` does; an
    ``int`` is seconds of inactivity, counted again from every save.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"{_USAGE}, not a bool.")
    if isinstance(value, int):
        return f"s:{value}"
    if isinstance(value, timedelta):
        return f"a:{now + value.total_seconds()!r}"
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(
                f"set_expiry() needs an aware datetime, not the naive {value!r}: "
                "use datetime.now(UTC) + timedelta(...)."
            )
        return f"a:{value.timestamp()!r}"
    raise TypeError(f"{_USAGE}, not {type(value).__name__}.")


def idle_seconds(setting: str | None) -> int:
    """The inactivity window a setting asks for; 0 means "the middleware's default"."""
    if setting is not None and setting[0] == "s":
        return int(setting[2:])
    return 0


def renewal_interval(setting: str | None, renew_interval: float, default_age: int) -> float:
    """How long after its last write a rolling session is due for renewal.

    ``renew_interval``, but never more than a tenth of the idle window that applies to
    this session: ``n`` for ``set_expiry(n)``, else ``default_age`` (``max_age``). A
    request that skips the renewal leaves the record, and the cookie, at least nine
    tenths of that window to live, so a client that comes back within that never finds
    its session expired. A fixed moment does not slide: its interval is the default one.
    """
    window = idle_seconds(setting) or default_age
    return min(renew_interval, max(window, 0) / 10)


def resolve_expires_at(
    setting: str | None, now: float, default_expires_at: float, cap: float | None
) -> float:
    """When a record written ``now`` ends.

    A fixed moment is kept; ``n`` seconds of inactivity end at ``now + n``; anything else
    (no setting, or ``"s:0"``) ends at ``default_expires_at``. Never later than ``cap``
    (creation + absolute_timeout). Lua and SQL mirror it: see the module docstring.
    """
    if setting is not None and setting[0] == "a":
        ends = float(setting[2:])
    else:
        seconds = idle_seconds(setting)
        ends = now + seconds if seconds else default_expires_at
    if cap is not None and cap < ends:
        return cap
    return ends


def ends_with_browser(setting: str | None, max_age: int | None) -> bool:
    """Whether the cookie carries no Max-Age (it ends when the browser closes).

    ``absolute_timeout`` does not change this: the server enforces it, and "don't
    remember me" must not survive a browser restart because of it.
    """
    if setting is None:
        return max_age is None
    return setting == "s:0"
