"""What is compared after every round: the store against the model.

- every record the model knows: ``store.get(key)`` is ``None`` for a dead one, and holds
  the model's data, owner and expiry for a live one (lost key, resurrected key or
  session, stale owner or expiry);
- every owner's ``list_sessions`` equals the model's live sessions of that owner;
- the store's integrity audit (audit.py: partial sessions, index entries that outlive
  their session, records the model does not know).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from asgi_sessions import Store
from tests.model import audit
from tests.model.reference import Model, compare_listing, short


async def store_problems(store: Store, model: Model) -> list[str]:
    problems = []
    # A derived import key (K) can be created again after its first record was retired
    # (concurrent first requests): the dead record's key then names the live one.
    live_keys = {
        record.key
        for record in model.records.values()
        if record.key is not None and record.alive(model.now)
    }
    for record in model.records.values():
        if record.key is None or (not record.alive(model.now) and record.key in live_keys):
            continue  # never shown to anyone; the audit still counts it
        got = await store.get(record.key)
        name = f"session {record.label()} ({short(record.key)})"
        if not record.alive(model.now):
            if got is not None:
                why = "deleted" if record.deleted else "expired"
                problems.append(f"{name} is {why}, but the store returns {got.get_decoded()}")
            continue
        if got is None:
            problems.append(f"{name} is lost: the model has {record.data}")
            continue
        seen = (got.get_decoded(), getattr(got, "owner", record.owner), got.expire_date)
        wanted = (record.data, record.owner, datetime.fromtimestamp(record.expires_at, UTC))
        if seen != wanted:
            problems.append(
                f"{name} holds (data, owner, expires) {_show(seen, model.start)}, "
                f"the model has {_show(wanted, model.start)}"
            )
        created = got.created.timestamp()
        if created != record.created_at:
            problems.append(
                f"{name} was created at t+{created - model.start:g}s, "
                f"the model says t+{record.created_at - model.start:g}s"
            )
    if model.cookie_store:
        return problems
    for owner in model.owner_names:
        rows = listing_rows(await store.list_sessions(owner))
        problem = compare_listing(rows, model.listing(owner))
        if problem:
            problems.append(f"list_sessions({owner}): {problem}")
    problems += [f"integrity: {problem}" for problem in await audit.audit(store, model)]
    return problems


def listing_rows(owned: list[Any]) -> list[list[Any]]:
    return [
        [
            o.public_id,
            o.created.timestamp(),
            o.last_saved.timestamp(),
            o.expire_date.timestamp(),
            o.user_agent,
        ]
        for o in owned
    ]


def _show(fields: tuple[Any, Any, datetime], start: float) -> str:
    data, owner, ends = fields
    return f"({data}, {owner}, t+{ends.timestamp() - start:g}s)"
