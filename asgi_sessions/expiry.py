"""Expiry: how a session's ``set_expiry()`` choice is kept, and when it ends.

The choice (the *expiry setting*) is stored with the record as a short opaque string:
``None`` (the middleware's ``max_age``), ``"s:<seconds>"`` (inactivity; ``"s:0"`` ends
with the browser) or ``"a:<timestamp>"`` (a fixed moment).

When a record ends is decided by the store at each write, from the setting *stored* at
that moment unless the writing request changed it (a concurrent request's stale copy must
never win): :func:`resolve_expires_at` is that rule, and the Redis Lua script and the SQL
stores implement the same few lines.
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
    (no setting, or ``"s:0"``, whose record the server keeps as long as a default one)
    ends at ``default_expires_at``. Never later than ``cap`` (creation + absolute_timeout).
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
