"""Concurrent changes to the same list or counter are merged, not lost (issue 23).

DESIGN.md "When it writes", the same-key paragraph: a list the request only consumed from
the front and/or extended at the end is saved as that change, applied atomically to the
stored list; ``session.increment()`` sends a delta; anything else on one key is last
writer wins. Each test races two requests that both loaded the session before either
saved, on every server store (the cookie store, one writer per response, keeps last
writer wins and says so).
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqladmin.flash import flash, get_flashed_messages
from starlette.requests import Request

from asgi_sessions import Session, Store
from asgi_sessions.stores.base import merge_value, split_json_list
from tests.support import app_with, client_for, sent


def _handlers(barrier: asyncio.Barrier) -> dict[str, Any]:
    async def seed(session: Session, request: Request) -> Any:
        session["cart"] = ["apple"]
        session["_messages"] = [{"message": "old"}]
        session["visits"] = 1
        return {}

    async def add(session: Session, request: Request) -> Any:
        await barrier.wait()
        session.setdefault("cart", []).append(request.query_params["item"])
        return {}

    async def consume(session: Session, request: Request) -> Any:
        await barrier.wait()
        return session.pop("_messages", [])

    async def produce(session: Session, request: Request) -> Any:
        await barrier.wait()
        session.setdefault("_messages", []).append({"message": request.query_params["m"]})
        return {}

    async def sqladmin_flash(session: Session, request: Request) -> Any:
        await barrier.wait()
        flash(request, request.query_params["m"])
        return {}

    async def sqladmin_read(session: Session, request: Request) -> Any:
        await barrier.wait()
        return get_flashed_messages(request)

    async def count(session: Session, request: Request) -> Any:
        await barrier.wait()
        return session.increment("visits", int(request.query_params.get("by", "1")))

    async def edit(session: Session, request: Request) -> Any:
        await barrier.wait()
        session["cart"][0] = request.query_params["item"]
        return {}

    async def read(session: Session, request: Request) -> Any:
        return dict(session)

    return {
        "seed": seed,
        "add": add,
        "consume": consume,
        "produce": produce,
        "flash": sqladmin_flash,
        "flashed": sqladmin_read,
        "count": count,
        "edit": edit,
        "read": read,
    }


async def _race(
    store: Store, first: tuple[str, dict[str, str]], second: tuple[str, dict[str, str]]
) -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
    """Seed a session, run two requests that both load before either saves, read back."""
    barrier = asyncio.Barrier(2)
    async with client_for(app_with(store, _handlers(barrier))) as client:
        seeded = await client.get("/seed")
        value = seeded.cookies["session"]
        client.cookies.clear()
        cookies = sent(value)
        one, two = await asyncio.gather(
            client.get(f"/{first[0]}", params=first[1], headers=cookies),
            client.get(f"/{second[0]}", params=second[1], headers=cookies),
        )
        after = await client.get("/read", headers=cookies)
        return one, two, after.json()


async def test_two_tabs_adding_to_the_cart_keep_both_items(store: Store) -> None:
    one, two, after = await _race(store, ("add", {"item": "pear"}), ("add", {"item": "fig"}))
    assert one.status_code == two.status_code == 200
    assert after["cart"][0] == "apple"
    assert sorted(after["cart"][1:]) == ["fig", "pear"]


async def test_a_consumer_racing_a_producer_leaves_exactly_the_new_message(store: Store) -> None:
    shown, _, after = await _race(store, ("consume", {}), ("produce", {"m": "new"}))
    assert shown.json() == [{"message": "old"}]
    assert after["_messages"] == [{"message": "new"}]


async def test_sqladmin_flash_racing_sqladmin_flash_keeps_both_messages(store: Store) -> None:
    barrier = asyncio.Barrier(2)
    handlers = _handlers(barrier)

    async def empty(session: Session, request: Request) -> Any:
        session["user"] = "ada"
        return {}

    async with client_for(app_with(store, {**handlers, "empty": empty})) as client:
        value = (await client.get("/empty")).cookies["session"]
        client.cookies.clear()
        cookies = sent(value)
        await asyncio.gather(
            client.get("/flash", params={"m": "one"}, headers=cookies),
            client.get("/flash", params={"m": "two"}, headers=cookies),
        )
        after = (await client.get("/read", headers=cookies)).json()
    assert sorted(m["message"] for m in after["_messages"]) == ["one", "two"]


async def test_sqladmin_get_flashed_messages_racing_flash_shows_each_message_once(
    store: Store,
) -> None:
    shown, _, after = await _race(store, ("flashed", {}), ("flash", {"m": "new"}))
    assert shown.json() == [{"message": "old"}]
    assert [m["message"] for m in after["_messages"]] == ["new"]


async def test_consuming_the_last_messages_removes_only_what_was_shown(store: Store) -> None:
    shown, again, after = await _race(store, ("consume", {}), ("consume", {}))
    assert shown.json() == again.json() == [{"message": "old"}]
    assert "_messages" not in after
    assert after["cart"] == ["apple"]


async def test_increments_racing_both_count(store: Store) -> None:
    one, two, after = await _race(store, ("count", {"by": "2"}), ("count", {"by": "5"}))
    assert {one.json(), two.json()} == {3, 6}
    assert after["visits"] == 8


async def test_a_mid_list_edit_is_last_writer_wins(store: Store) -> None:
    _, _, after = await _race(store, ("edit", {"item": "kiwi"}), ("add", {"item": "fig"}))
    # One serial order or the other: the edit rewrote the whole list it saw, or the
    # append came after it.
    assert after["cart"] in (["kiwi"], ["kiwi", "fig"])


async def test_the_cookie_store_keeps_last_writer_wins_on_one_key(any_store: Store) -> None:
    one, two, after = await _race(any_store, ("add", {"item": "pear"}), ("add", {"item": "fig"}))
    if any_store.keeps_data_in_cookie:
        # One writer per response: each response carries its own cookie, and the
        # browser keeps the last one it receives.
        assert one.status_code == two.status_code == 200
        return
    assert sorted(after["cart"]) == ["apple", "fig", "pear"]


async def test_a_non_integer_cannot_be_incremented(store: Store) -> None:
    async def bad(session: Session, request: Request) -> Any:
        session["name"] = "ada"
        with pytest.raises(TypeError, match="not an int"):
            session.increment("name")
        with pytest.raises(TypeError, match="adds an int"):
            session.increment("n", 1.5)  # type: ignore[arg-type]
        return session.increment("n") + await session.aincrement("n", 2)

    async with client_for(app_with(store, {"bad": bad})) as client:
        assert (await client.get("/bad")).json() == 4


def test_the_reference_merge_splices_items_as_the_serializer_wrote_them() -> None:
    stored = '["a",{"x":[1,"]"]},1.5e+100,[]]'
    assert split_json_list(stored) == ['"a"', '{"x":[1,"]"]}', "1.5e+100", "[]"]
    assert merge_value(stored, (('"a"',), ("{}",))) == '[{"x":[1,"]"]},1.5e+100,[],{}]'
    assert merge_value('["b","c"]', (('"a"', '"b"'), ())) == '["c"]'
    assert merge_value('["a"]', (('"a"',), ())) is None
    assert merge_value('"replaced"', (('"a"',), ('"b"',))) == '"replaced"'
    assert merge_value(None, 3) == "3"
    assert merge_value("-4", 3) == "-1"
    assert merge_value("true", 3) == "true"


async def test_a_version_1_postgres_schema_is_migrated_to_merge_lists(postgres_url: str) -> None:
    import asyncpg

    from asgi_sessions.stores.postgres import PostgresStore
    from asgi_sessions.stores.postgres_sql import SCHEMA_VERSION
    from tests.support import headers_with, saved_session

    async with PostgresStore(postgres_url) as store:
        await store.load("k" * 43)
    db = await asyncpg.connect(postgres_url)
    try:
        # Version 1 as it was: the write function without the merge parameters.
        await db.execute(
            "DROP FUNCTION asgi_sessions_write(bytea, bytea, bool, bool, text[], text[], text[],"
            " float8, float8, float8, float8, float8, text, bool, text, text, bool, text[],"
            " text[]);"
            "CREATE FUNCTION asgi_sessions_write(bytea, bytea, bool, bool, text[], text[], text[],"
            " float8, float8, float8, float8, float8, text, bool, text, bool, OUT int,"
            " OUT float8, OUT text) LANGUAGE sql AS $$ SELECT 2, 0::float8, ''::text $$;"
            "UPDATE asgi_sessions_meta SET version = 1"
        )
        async with PostgresStore(postgres_url) as store:
            config, cookie = await saved_session(store, {"n": 1})
            session = Session(config, headers_with(cookie))
            await session.load()
            session.increment("n", 2)
            await session.save()
            record = await store.get(cookie.rpartition(".")[0])
            assert record is not None
            assert record.get_decoded() == {"n": 3}
        assert await db.fetchval("SELECT version FROM asgi_sessions_meta") == SCHEMA_VERSION
    finally:
        await db.close()


async def test_merged_lists_read_back_byte_identical_to_the_serializer(store: Store) -> None:
    from asgi_sessions.serializers import JSONSerializer
    from tests.support import headers_with, saved_session

    tricky: list[Any] = ["]", '"[,"', "\\", "é✓", [], {}, {"a": [1, {"b": "}"}]}, 1.5e100, -0.25]
    config, cookie = await saved_session(store, {"cart": [0, "x", 10**15]})
    first, second = Session(config, headers_with(cookie)), Session(config, headers_with(cookie))
    await first.load()
    await second.load()
    first["cart"].pop(0)
    first["cart"].extend(tricky)
    second["cart"].extend([None, True, "\n\t\u2028"])
    await first.save()
    await second.save()
    stored = await store.load(cookie.rpartition(".")[0])
    assert stored is not None
    expected = ["x", 10**15, *tricky, None, True, "\n\t\u2028"]
    assert stored.data["cart"] == JSONSerializer().dumps(expected)
