"""Django 5.1's async session API on ``Session``, checked against Django's documentation.

Each method is called on a session that is not loaded yet (the point of the API: it
loads first), on every store. The expected values are Django's documented ones
(docs/topics/http/sessions.txt): ``aget``'s default is ``None``; ``apop`` without a
default raises ``KeyError``; ``get_expiry_age()`` equals the cookie age for sessions with
no custom expiry or that end at browser close; ``modification`` and ``expiry`` keyword
arguments; ``get_expiry_date()`` of a fixed moment is that moment.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_sessions import Session, SessionMiddleware, SessionNotLoaded, Store
from tests.clock import FakeClock
from tests.support import SECRET, client_for, cookie_value, headers_with, saved_session, sent

MAX_AGE = 3600


async def unloaded(store: Store, data: dict[str, Any] | None = None, **options: Any) -> Session:
    """A request's session whose cookie names a stored session holding ``data``."""
    options.setdefault("max_age", MAX_AGE)
    config, cookie = await saved_session(store, data or {"fav_color": "blue"}, **options)
    session = Session(config, headers_with(cookie))
    with pytest.raises(SessionNotLoaded):
        len(session)
    return session


def now(clock: FakeClock) -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


# -- the mapping ----------------------------------------------------------------------


async def test_aget_loads_and_returns_the_value_or_the_default_none(any_store: Store) -> None:
    session = await unloaded(any_store)
    assert await session.aget("fav_color") == "blue"
    assert await session.aget("missing") is None
    assert await session.aget("missing", "red") == "red"
    assert session.accessed
    assert not session.modified


async def test_aset_loads_then_sets_and_marks_modified(any_store: Store) -> None:
    session = await unloaded(any_store)
    await session.aset("fav_color", "green")
    assert session.modified
    assert dict(session) == {"fav_color": "green"}


async def test_apop_returns_the_value_and_marks_modified_only_if_it_was_there(
    any_store: Store,
) -> None:
    session = await unloaded(any_store)
    assert await session.apop("missing", "red") == "red"
    assert await session.apop("missing", default=None) is None  # by keyword, as in Django
    assert not session.modified
    with pytest.raises(KeyError):
        await session.apop("missing")
    assert await session.apop("fav_color") == "blue"
    assert session.modified
    assert dict(session) == {}


async def test_asetdefault_inserts_only_a_missing_key(any_store: Store) -> None:
    session = await unloaded(any_store)
    assert await session.asetdefault("fav_color", "red") == "blue"
    assert not session.modified
    assert await session.asetdefault("size", "L") == "L"
    assert session.modified
    assert dict(session) == {"fav_color": "blue", "size": "L"}


async def test_aupdate_marks_modified_even_when_empty_as_in_django(any_store: Store) -> None:
    session = await unloaded(any_store)
    await session.aupdate({})
    assert session.modified
    await session.aupdate({"size": "L"})
    await session.aupdate([("fit", "slim")])
    assert dict(session) == {"fav_color": "blue", "size": "L", "fit": "slim"}


async def test_ahas_key_loads_and_tests_membership(any_store: Store) -> None:
    session = await unloaded(any_store)
    assert await session.ahas_key("fav_color")
    assert not await session.ahas_key("missing")
    assert session.accessed


async def test_akeys_avalues_and_aitems_are_live_views(any_store: Store) -> None:
    session = await unloaded(any_store)
    keys, values, items = await session.akeys(), await session.avalues(), await session.aitems()
    assert (list(keys), list(values), list(items)) == (
        ["fav_color"],
        ["blue"],
        [("fav_color", "blue")],
    )
    session["size"] = "L"
    assert "size" in keys and "L" in values and ("size", "L") in items


# -- the record -------------------------------------------------------------------------


async def test_aflush_deletes_the_record_and_clears_the_data(any_store: Store) -> None:
    session = await unloaded(any_store)
    key = session._client_key()
    await session.aflush()
    assert dict(session) == {}
    assert session.session_key is None
    assert session.modified and session.accessed
    if not any_store.keeps_data_in_cookie:
        assert await any_store.get(key) is None  # type: ignore[arg-type]


async def test_acycle_key_loads_keeps_the_data_and_kills_the_old_key(any_store: Store) -> None:
    session = await unloaded(any_store)
    old = session._client_key()
    await session.acycle_key()
    assert dict(session) == {"fav_color": "blue"}
    assert session.session_key is not None
    if not any_store.keeps_data_in_cookie:  # a cookie's payload is its data, not a key
        assert session.session_key != old
        assert await any_store.get(old) is None  # type: ignore[arg-type]
        record = await any_store.get(session.session_key)  # type: ignore[arg-type]
        assert record is not None and record.get_decoded() == {"fav_color": "blue"}


async def test_asave_loads_and_writes_what_changed(any_store: Store) -> None:
    session = await unloaded(any_store)
    await session.asave()  # nothing changed yet: loads, writes nothing
    assert session.session_key is not None
    await session.aset("size", "L")
    await session.asave()
    assert not session._pending()
    if not any_store.keeps_data_in_cookie:
        record = await any_store.get(session.session_key)
        assert record is not None
        assert record.get_decoded() == {"fav_color": "blue", "size": "L"}


# -- expiry ------------------------------------------------------------------------------


async def test_without_a_custom_expiry_the_age_is_the_cookie_age(
    any_store: Store, clock: FakeClock
) -> None:
    session = await unloaded(any_store)
    assert await session.aget_expiry_age() == MAX_AGE
    assert await session.aget_expiry_date() == now(clock) + timedelta(seconds=MAX_AGE)
    assert await session.aget_expire_at_browser_close() is False


async def test_browser_close_follows_the_middleware_default_then_the_sessions_choice(
    any_store: Store,
) -> None:
    # max_age=None is SESSION_EXPIRE_AT_BROWSER_CLOSE = True.
    session = await unloaded(any_store, max_age=None)
    assert await session.aget_expire_at_browser_close() is True
    await session.aset_expiry(300)
    assert await session.aget_expire_at_browser_close() is False
    session = await unloaded(any_store)
    await session.aset_expiry(0)
    assert await session.aget_expire_at_browser_close() is True


async def test_aset_expiry_takes_seconds_zero_a_timedelta_a_datetime_or_none(
    any_store: Store, clock: FakeClock
) -> None:
    session = await unloaded(any_store)
    await session.aset_expiry(300)  # seconds of inactivity
    assert session.modified
    assert await session.aget_expiry_age() == 300
    await session.aset_expiry(0)  # at browser close: the age is still the cookie age
    assert await session.aget_expiry_age() == MAX_AGE
    await session.aset_expiry(timedelta(days=1))
    assert await session.aget_expiry_age() == 86_400
    moment = now(clock) + timedelta(hours=5)
    await session.aset_expiry(moment)
    assert await session.aget_expiry_date() == moment
    assert await session.aget_expiry_age() == 5 * 3600
    await session.aset_expiry(None)  # back to the global policy
    assert await session.aget_expiry_age() == MAX_AGE


async def test_the_modification_keyword_counts_from_the_last_save(
    any_store: Store, clock: FakeClock
) -> None:
    session = await unloaded(any_store)
    saved = now(clock) - timedelta(seconds=100)
    # No custom expiry: the cookie age from that moment.
    assert await session.aget_expiry_age(modification=saved) == MAX_AGE
    assert await session.aget_expiry_date(modification=saved) == saved + timedelta(seconds=MAX_AGE)
    moment = now(clock) + timedelta(seconds=1000)
    await session.aset_expiry(moment)
    assert await session.aget_expiry_age(modification=saved) == 1100
    assert await session.aget_expiry_date(modification=saved) == moment


async def test_the_expiry_keyword_is_used_instead_and_loads_nothing(
    any_store: Store, clock: FakeClock
) -> None:
    session = await unloaded(any_store)
    saved = now(clock) - timedelta(seconds=100)
    moment = now(clock) + timedelta(seconds=1000)
    assert await session.aget_expiry_age(expiry=300) == 300
    assert await session.aget_expiry_age(modification=saved, expiry=300) == 300
    assert await session.aget_expiry_age(expiry=None) == MAX_AGE
    assert await session.aget_expiry_age(expiry=0) == MAX_AGE
    assert await session.aget_expiry_age(modification=saved, expiry=moment) == 1100
    assert await session.aget_expiry_date(expiry=moment) == moment
    assert await session.aget_expiry_date(modification=saved, expiry=300) == saved + timedelta(
        seconds=300
    )
    assert await session.aget_expiry_date(expiry=None) == now(clock) + timedelta(seconds=MAX_AGE)
    with pytest.raises(SessionNotLoaded):
        len(session)  # Django: "passing expiry avoids a load"


async def test_a_naive_modification_is_refused(any_store: Store) -> None:
    session = await unloaded(any_store)
    with pytest.raises(ValueError, match="aware datetime"):
        await session.aget_expiry_age(modification=datetime(2030, 1, 1))


async def test_the_stored_expiry_choice_survives_into_the_next_request(
    store: Store, clock: FakeClock
) -> None:
    session = await unloaded(store)
    await session.aset_expiry(300)
    await session.asave()
    assert session.session_key is not None
    later = Session(session._config, headers_with(session._config.signer.sign(session.session_key)))
    clock.advance(50)
    assert await later.aget_expiry_age() == 300  # inactivity counts again from a save
    assert await later.aget_expiry_age(modification=now(clock) - timedelta(seconds=50)) == 300


# -- a Django async view, ported by changing request.session to request.state.session ----


async def test_a_ported_django_async_view_works_unchanged_through_http(any_store: Store) -> None:
    async def view(request: Request) -> JSONResponse:
        session = request.state.session  # Django: request.session
        if await session.aget("has_commented", False):
            return JSONResponse({"said": "You've already commented."})
        await session.aset("has_commented", True)
        await session.aset_expiry(timedelta(days=1))
        return JSONResponse(
            {"said": "Thanks for your comment!", "age": await session.aget_expiry_age()}
        )

    app = Starlette(
        routes=[Route("/comment", view)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=any_store)],
    )
    async with client_for(app) as client:
        first = await client.get("/comment")
        assert first.json() == {"said": "Thanks for your comment!", "age": 86_400}
        cookie = cookie_value(first)
        assert "Max-Age=86400" in first.headers["set-cookie"]
        client.cookies.clear()
        again = await client.get("/comment", headers=sent(cookie))
        assert again.json() == {"said": "You've already commented."}
        assert "set-cookie" not in again.headers


async def test_an_empty_aupdate_on_a_stored_session_keeps_its_cookie(any_store: Store) -> None:
    async def view(request: Request) -> JSONResponse:
        session = request.state.session
        await session.aupdate({})  # modified, as in Django, yet nothing to write
        return JSONResponse(dict(session))

    async def start(request: Request) -> JSONResponse:
        await request.state.session.aset("user", "alice")
        return JSONResponse({})

    app = Starlette(
        routes=[Route("/start", start), Route("/touch", view)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=any_store)],
    )
    async with client_for(app) as client:
        cookie = cookie_value(await client.get("/start"))
        client.cookies.clear()
        touched = await client.get("/touch", headers=sent(cookie))
        assert touched.json() == {"user": "alice"}
        assert "set-cookie" not in touched.headers  # neither re-sent nor deleted
        assert (await client.get("/touch", headers=sent(cookie))).json() == {"user": "alice"}
