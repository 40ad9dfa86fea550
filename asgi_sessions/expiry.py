"""Expiry: how a session's ``set_expiry()`` choice is kept, and when it ends.

The choice is stored with the record as a short opaque string: ``None`` (the middleware's
``max_age``), ``"s:<seconds>"`` (inactivity, ``"s:0"`` = ends with the browser) or
``"a:<timestamp>"`` (a fixed moment).
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = ["encode_expiry", "ends_with_browser", "expires_at"]

_USAGE = "set_expiry() takes seconds, a timedelta, a datetime, 0 or None"


def encode_expiry(value: int | timedelta | datetime | None, now: float) -> str | None:
    """The stored form of a ``set_expiry()`` argument; raises on anything else."""
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


def expires_at(
    expiry: str | None,
    *,
    now: float,
    default_age: int,
    created_at: float | None,
    absolute_timeout: int | None,
) -> float:
    """When a session saved ``now`` ends: its own choice, else ``default_age`` from now,
    never later than ``absolute_timeout`` after its creation."""
    if expiry is not None and expiry[0] == "a":
        ends = float(expiry[2:])
    else:
        seconds = int(expiry[2:]) if expiry is not None else 0
        # "s:0" ends with the browser, but the server keeps the record for default_age.
        ends = now + (seconds or default_age)
    if absolute_timeout is not None:
        ends = min(ends, (created_at if created_at is not None else now) + absolute_timeout)
    return ends


def ends_with_browser(expiry: str | None, max_age: int | None) -> bool:
    """Whether the cookie carries no Max-Age (it ends when the browser closes)."""
    if expiry is None:
        return max_age is None
    return expiry == "s:0"
