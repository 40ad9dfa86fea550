"""The checker's post-round checks report every failure class issue 13 lists.

A real session is saved, a model that agrees with it is built (the checks must find
nothing), then one failure is made on purpose and the checks must name it. Failures that
live in a store's internals (a partial session, an index entry that outlives its
session) are made there, on the stores whose layout can hold them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from asgi_sessions import Session, Store
from asgi_sessions.stores.base import hash_key
from tests.clock import FakeClock
from tests.conftest import SERVER_STORES
from tests.model.checks import store_problems
from tests.model.harness import public_id
from tests.model.program import Options
from tests.model.records import Record
from tests.model.reference import Model
from tests.support import make_config

OWNER = "detection-owner"
OPTIONS = Options(3600, None, False, 0, False, False)


async def _saved(store: Store, data: dict[str, Any]) -> tuple[Session, Model]:
    """A stored session and a model that agrees with it."""
    config = make_config(store, max_age=OPTIONS.max_age)
    session = Session(config)
    await session.load()
    session.update(data)
    session.owner = OWNER
    await session.save()
    assert session.session_key is not None
    now = store.clock()
    model = Model(OPTIONS, 1, [OWNER], cookie_store=False, now=now, public_id=public_id)
    record = Record(1, dict(data), OWNER, None, now, now, now + 3600, key=session.session_key)
    model.records[1] = record
    return session, model


async def _reloaded(session: Session) -> Session:
    again = Session(session._config, [(b"cookie", f"session={_cookie(session)}".encode())])
    return await again


def _cookie(session: Session) -> str:
    assert session.session_key is not None
    return session._config.signer.sign(session.session_key)


# -- the failures ------------------------------------------------------------------------


async def lost_key(store: Store, session: Session, model: Model) -> None:
    later = await _reloaded(session)
    del later["a"]  # the store drops a key the model still holds
    await later.save()


async def resurrected_key(store: Store, session: Session, model: Model) -> None:
    del model.records[1].data["b"]  # the model deleted it; the store kept it


async def resurrected_session(store: Store, session: Session, model: Model) -> None:
    model.records[1].deleted = True  # logged out, but the store still serves it


async def stale_owner(store: Store, session: Session, model: Model) -> None:
    model.records[1].owner = OWNER + "-next"  # another request rebound it; the store did not


async def stale_expiry(store: Store, session: Session, model: Model) -> None:
    model.records[1].expires_at += 60  # a later write renewed it; the store did not


async def stale_last_write(store: Store, session: Session, model: Model) -> None:
    model.records[1].updated_at += 1  # a renewal happened; the store did not record it


async def unknown_record(store: Store, session: Session, model: Model) -> None:
    await _saved(store, {"x": 1})  # a live record nobody was told about


async def partial_session(store: Store, session: Session, model: Model) -> None:
    """Data left without its metadata (Spring Session's bug), the model calling it dead."""
    model.records[1].deleted = True
    store_id = hash_key(session.session_key or "")
    if type(store).__name__ == "RedisStore":
        name = store.layout.name(session.session_key)  # type: ignore[attr-defined]
        await store.client.hdel(name, "m:e", "m:c", "m:u")  # type: ignore[attr-defined]
    else:

        def drop_row(conn: Any) -> None:
            conn.execute("DELETE FROM sessions WHERE id = ?", (store_id,))

        await store._run("corrupt", drop_row)  # type: ignore[attr-defined]


async def stale_index_entry(store: Store, session: Session, model: Model) -> None:
    """The session is gone, its owner-index entry stays (and listing does not prune it)."""
    model.records[1].deleted = True
    store_id = hash_key(session.session_key or "")
    if type(store).__name__ == "RedisStore":
        await store.client.delete(store.layout.name(session.session_key))  # type: ignore[attr-defined]

        async def listing_that_prunes_nothing(owner: str) -> list[Any]:
            return []  # a fault a correct listing cannot produce

        store.list_sessions = listing_that_prunes_nothing  # type: ignore[method-assign]
    else:
        del store._records[store_id]  # type: ignore[attr-defined]


Failure = Callable[[Store, Session, Model], Awaitable[None]]
EVERY_STORE: dict[Failure, str] = {
    lost_key: "holds (data, owner, expires) ({'b': 1}, detection-owner, t+3600s), the model has",
    resurrected_key: "holds (data, owner, expires) ({'a': 0, 'b': 1}",
    resurrected_session: "is deleted, but the store returns",
    stale_owner: "the model has ({'a': 0, 'b': 1}, detection-owner-next, t+3600s)",
    stale_expiry: "t+3600s), the model has ({'a': 0, 'b': 1}, detection-owner, t+3660s)",
    unknown_record: "the store holds a live record the model does not",
}
# Where the store's layout can hold the failure at all.
REDIS = {"redis", "redis-cluster", "redis-sentinel"}
# (PostgreSQL cannot hold either: a foreign key cascades data rows, the owner is a column.)
INTERNAL: dict[Failure, tuple[set[str], str]] = {
    partial_session: ({"sqlite", *REDIS}, "without their sessions row|lacks"),
    stale_last_write: ({"memory", "sqlite", "postgres", *REDIS}, "was last written at t+0s"),
    stale_index_entry: ({"memory", *REDIS}, "index entry"),
}
CASES = [(failure, kind, text) for failure, text in EVERY_STORE.items() for kind in SERVER_STORES]
CASES += [
    (failure, kind, text)
    for failure, (kinds, text) in INTERNAL.items()
    for kind in SERVER_STORES
    if kind in kinds
]


@pytest.mark.parametrize(
    ("failure", "store", "expected"),
    CASES,
    indirect=["store"],
    ids=[f"{failure.__name__}-{kind}" for failure, kind, _ in CASES],
)
async def test_the_checks_after_each_round_report_each_failure_class(
    store: Store, clock: FakeClock, failure: Failure, expected: str
) -> None:
    clock.now = float(int(clock.now))  # whole seconds, as the checker uses
    session, model = await _saved(store, {"a": 0, "b": 1})
    assert await store_problems(store, model) == []
    await failure(store, session, model)
    problems = await store_problems(store, model)
    assert any(any(part in p for part in expected.split("|")) for p in problems), problems
