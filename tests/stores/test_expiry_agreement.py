"""Every server store ends a record where ``asgi_sessions.expiry.resolve_expires_at`` says.

The rule has one Python copy (memory and SQLite call it) and two mirrors that run inside
the store's atomic write: Redis's Lua (``write.lua``, ``update.lua``) and PostgreSQL's SQL
function (``postgres_schema.sql``). A table of cases (each expiry setting, with and
without an ``absolute_timeout`` cap, ``max_age`` unset and set) goes through the real
stores on each path a write takes, and the ``expires_at`` each store answers and keeps
must equal the Python rule's (issue 27, item 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from asgi_sessions import Store
from asgi_sessions.expiry import resolve_expires_at
from asgi_sessions.session import DEFAULT_MAX_AGE
from asgi_sessions.stores.base import Saved, SessionWrite
from tests.clock import FakeClock

_KEEP: Any = object()  # the write leaves the stored setting as it is

# Each setting as a function of the moment the record is created.
SETTINGS: dict[str, Callable[[float], str | None]] = {
    "none": lambda t0: None,
    "idle": lambda t0: "s:600",
    "browser-session": lambda t0: "s:0",
    "fixed-moment": lambda t0: f"a:{t0 + 5000.25!r}",
}
# Creation + absolute_timeout: 650 s binds an idle record's second write, not its first.
CAPS = (None, 650.0)
MAX_AGES = (None, 3600)


@dataclass(frozen=True)
class Case:
    """One row of the table, for a record created at ``t0``."""

    setting: str | None
    age: int
    cap: float | None
    t0: float
    label: str

    @classmethod
    def at(cls, t0: float, name: str, cap_after: float | None, max_age: int | None) -> Case:
        return cls(
            setting=SETTINGS[name](t0),
            age=DEFAULT_MAX_AGE if max_age is None else max_age,
            cap=None if cap_after is None else t0 + cap_after,
            t0=t0,
            label=f"{name}, cap={cap_after}, max_age={max_age}",
        )

    def write(self, now: float, *, setting: Any = _KEEP, create: bool = False) -> SessionWrite:
        """A change as the session layer makes it at ``now``: one key set."""
        return SessionWrite(
            set={"k": "1"},
            deleted=frozenset(),
            replace=False,
            create=create,
            now=now,
            default_expires_at=now + self.age,
            expires_cap=self.cap,
            created_at=self.t0,
            expiry=None if setting is _KEEP else setting,
            expiry_changed=setting is not _KEEP,
        )

    async def check(self, store: Store, phase: str, saved: Saved, now: float) -> str | None:
        """What went wrong, if the store's end for ``saved`` is not the rule's."""
        expected = resolve_expires_at(self.setting, now, now + self.age, self.cap)
        stored = await store.load(saved.key)
        kept = None if stored is None else stored.expires_at
        if saved.expires_at == kept == expected:
            return None
        return f"{self.label}, {phase}: answered {saved.expires_at}, kept {kept}, rule {expected}"


@pytest.mark.parametrize("name", SETTINGS)
async def test_every_store_ends_a_record_where_the_python_rule_says(
    store: Store, clock: FakeClock, name: str
) -> None:
    found = []
    for cap_after in CAPS:
        for max_age in MAX_AGES:
            case = Case.at(clock(), name, cap_after, max_age)
            # The request that sets it creates the record with it.
            made = await store.create(case.write(clock(), setting=case.setting, create=True))
            found.append(await case.check(store, "a create", made, clock()))
            # Later writes leave it: the store reads the stored setting.
            clock.advance(100)
            saved = await store.save(made.key, case.write(clock()))
            found.append(await case.check(store, "keys set (Redis: update.lua)", saved, clock()))
            clock.advance(100)
            change = dataclasses.replace(case.write(clock()), deleted=frozenset({"gone"}))
            saved = await store.save(made.key, change)
            found.append(await case.check(store, "a key deleted (write.lua)", saved, clock()))
            clock.advance(100)
            saved = await store.rotate(made.key, case.write(clock()))
            found.append(await case.check(store, "a rotation", saved, clock()))
            # A record created without a setting, then given it by a later request.
            other = await store.create(case.write(clock(), setting=None, create=True))
            saved = await store.save(other.key, case.write(clock(), setting=case.setting))
            found.append(await case.check(store, "a save that sets it", saved, clock()))
            clock.advance(100)
    assert [problem for problem in found if problem is not None] == []
