"""When the middleware writes, through real HTTP, on every store.

DESIGN.md "When it writes" and "Cookies and keys", one test per rule.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from asgi_sessions import Session, Store
from tests.clock import FakeClock
from tests.support import StoreSpy, app_with, client_for, cookie_value, sent


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every store, the cookie store included; server-only rules skip it with the reason."""
    return any_store


def server_side_only(store: Store, reason: str) -> None:
    if store.keeps_data_in_cookie:
        pytest.skip(f"CookieStore: {reason}")


async def set_color(session: Session, request: Request) -> Any:
    session["fav_color"] = request.query_params.get("color", "blue")
    return dict(session)


async def read_all(session: Session, request: Request) -> Any:
    return dict(session)


async def remove_color(session: Session, request: Request) -> Any:
    del session["fav_color"]
    return dict(session)


async def flush(session: Session, request: Request) -> Any:
    await session.flush()
    return {"flushed": True}


async def cycle(session: Session, request: Request) -> Any:
    await session.cycle_key()
    return dict(session)


HANDLERS = {"set": set_color, "read": read_all, "remove": remove_color, "flush": flush}


async def start_session(client: httpx.AsyncClient, color: str = "blue") -> str:
    response = await client.get("/set", params={"color": color})
    assert response.status_code == 200
    return cookie_value(response)


async def test_first_write_sets_an_exact_cookie_and_saves(store: Store) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        response = await client.get("/set")
        value = cookie_value(response)
        assert response.json() == {"fav_color": "blue"}
        assert response.headers["set-cookie"] == (
            f"session={value}; path=/; Max-Age=1209600; httponly; samesite=lax"
        )
        assert response.headers["vary"] == "Cookie"
        assert response.headers["cache-control"] == "private"
        assert (await client.get("/read")).json() == {"fav_color": "blue"}


async def test_untouched_request_does_no_io_and_sends_no_headers(store: Store) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        await start_session(client)
        spy = StoreSpy(store)
        response = await client.get("/untouched")
        assert spy.calls == {}
        assert "set-cookie" not in response.headers
        assert "vary" not in response.headers


async def test_read_only_request_loads_once_and_never_writes(store: Store) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        await start_session(client)
        spy = StoreSpy(store)
        response = await client.get("/read")
        assert response.json() == {"fav_color": "blue"}
        assert spy.calls == {"load": 1}
        assert "set-cookie" not in response.headers
        assert response.headers["vary"] == "Cookie"


async def test_vary_merges_with_the_apps_own_vary(store: Store) -> None:
    async def vary(session: Session, request: Request) -> Response:
        session.get("x")
        return PlainTextResponse("ok", headers={"Vary": "Accept-Encoding"})

    async with client_for(app_with(store, {"vary": vary})) as client:
        response = await client.get("/vary")
        assert response.headers["vary"] == "Accept-Encoding, Cookie"


async def test_app_cache_control_is_kept_when_the_cookie_is_set(store: Store) -> None:
    async def cached(session: Session, request: Request) -> Response:
        session["x"] = 1
        return PlainTextResponse("ok", headers={"Cache-Control": "no-store"})

    async with client_for(app_with(store, {"cached": cached})) as client:
        response = await client.get("/cached")
        assert response.headers["cache-control"] == "no-store"
        assert "set-cookie" in response.headers


async def test_nothing_is_saved_when_the_app_answers_5xx(store: Store) -> None:
    async def fail(session: Session, request: Request) -> Response:
        session["fav_color"] = "red"
        return PlainTextResponse("boom", status_code=503)

    async with client_for(app_with(store, {**HANDLERS, "fail": fail})) as client:
        await start_session(client)
        spy = StoreSpy(store)
        response = await client.get("/fail")
        assert response.status_code == 503
        assert "set-cookie" not in response.headers
        assert spy.writes == 0
        assert (await client.get("/read")).json() == {"fav_color": "blue"}


async def test_nothing_is_saved_when_the_app_raises(store: Store) -> None:
    async def crash(session: Session, request: Request) -> Response:
        session["fav_color"] = "red"
        raise RuntimeError("handler failed")

    app = app_with(store, {**HANDLERS, "crash": crash})
    async with client_for(app, raise_app_exceptions=False) as client:
        await start_session(client)
        response = await client.get("/crash")
        assert response.status_code == 500
        assert "set-cookie" not in response.headers
        assert (await client.get("/read")).json() == {"fav_color": "blue"}


async def test_a_4xx_response_still_saves(store: Store) -> None:
    async def not_found(session: Session, request: Request) -> Response:
        session["seen_404"] = True
        return PlainTextResponse("nope", status_code=404)

    async with client_for(app_with(store, {**HANDLERS, "nf": not_found})) as client:
        response = await client.get("/nf")
        assert response.status_code == 404
        assert "set-cookie" in response.headers
        assert (await client.get("/read")).json() == {"seen_404": True}


async def test_a_new_empty_session_is_never_written_nor_cookied(store: Store) -> None:
    async def touch_and_empty(session: Session, request: Request) -> Any:
        session["a"] = 1
        del session["a"]
        session.clear()
        return {}

    async with client_for(app_with(store, {"t": touch_and_empty})) as client:
        spy = StoreSpy(store)
        response = await client.get("/t")
        assert spy.writes == 0
        assert "set-cookie" not in response.headers
        assert response.headers["vary"] == "Cookie"


async def test_an_emptied_session_is_deleted_and_its_cookie_removed(store: Store) -> None:
    app = app_with(store, HANDLERS, path="/", domain="example.test")
    async with client_for(app) as client:
        response = await client.get("/set")
        value = cookie_value(response)
        response = await client.get("/remove", headers=sent(value))
        assert response.headers["set-cookie"] == (
            'session=""; path=/; Max-Age=0; expires=Thu, 01 Jan 1970 00:00:00 GMT; '
            "httponly; samesite=lax; domain=example.test"
        )
        assert response.headers["vary"] == "Cookie"
        if not store.keeps_data_in_cookie:
            assert await store.load(await _key_of(store, value)) is None


async def _key_of(store: Store, cookie: str) -> str:
    return cookie.rpartition(".")[0]


async def test_flush_clears_deletes_and_removes_the_cookie(store: Store) -> None:
    server_side_only(
        store,
        "a signed cookie cannot be revoked, so replaying it after logout works until it expires",
    )
    async with client_for(app_with(store, HANDLERS)) as client:
        old = await start_session(client)
        response = await client.get("/flush")
        assert response.headers["set-cookie"].startswith('session=""; path=/; Max-Age=0;')
        assert await store.load(await _key_of(store, old)) is None
        # Replaying the old cookie after logout gives an empty session.
        client.cookies.clear()
        assert (await client.get("/read", headers=sent(old))).json() == {}


async def test_flush_without_a_cookie_sets_no_cookie(store: Store) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        response = await client.get("/flush")
        assert "set-cookie" not in response.headers
        assert response.headers["vary"] == "Cookie"


async def test_flush_works_without_loading_first(store: Store) -> None:
    server_side_only(store, "there is no server-side record to delete")

    async def logout(session: Session, request: Request) -> Any:
        return {}

    async def raw_flush(request: Request) -> Response:
        await request.state.session.flush()
        return PlainTextResponse("bye")

    app = app_with(store, HANDLERS)
    from starlette.routing import Route

    app.router.routes.append(Route("/raw_flush", raw_flush))
    async with client_for(app) as client:
        old = await start_session(client)
        response = await client.get("/raw_flush")
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert await store.load(await _key_of(store, old)) is None


async def test_cycle_key_keeps_the_data_under_a_new_key(store: Store) -> None:
    server_side_only(
        store, "the old cookie stays valid until it expires (no server state to delete)"
    )
    async with client_for(app_with(store, {**HANDLERS, "cycle": cycle})) as client:
        old = await start_session(client)
        response = await client.get("/cycle")
        new = cookie_value(response)
        assert new != old
        assert response.json() == {"fav_color": "blue"}
        assert (await client.get("/read")).json() == {"fav_color": "blue"}
        client.cookies.clear()
        assert (await client.get("/read", headers=sent(old))).json() == {}


async def _seed_cart(session: Session, request: Request) -> Any:
    session["cart"] = {"items": []}
    return {}


async def _append_in_place(session: Session, request: Request) -> Any:
    session["cart"]["items"].append(request.query_params["item"])
    return {"modified": session.modified}


async def _append_and_flash(session: Session, request: Request) -> Any:
    # sqladmin's flash() appends to a list in place; the view also sets another key.
    session["cart"]["items"].append(request.query_params["item"])
    session["seen"] = True
    return {}


async def _append_forced(session: Session, request: Request) -> Any:
    session["cart"]["items"].append(request.query_params["item"])
    session.modified = True
    return {"modified": session.modified}


NESTED = {
    **HANDLERS,
    "seed": _seed_cart,
    "nested": _append_in_place,
    "flash": _append_and_flash,
    "forced": _append_forced,
}


async def test_a_list_changed_in_place_is_saved_on_its_own(store: Store) -> None:
    async with client_for(app_with(store, NESTED)) as client:
        await client.get("/seed")
        response = await client.get("/nested", params={"item": "apple"})
        # Not flagged while the view runs (as in Django), but found and saved at the end.
        assert response.json() == {"modified": False}
        assert "set-cookie" in response.headers
        assert (await client.get("/read")).json() == {"cart": {"items": ["apple"]}}


async def test_reading_a_list_without_changing_it_writes_nothing(store: Store) -> None:
    async with client_for(app_with(store, NESTED)) as client:
        await client.get("/seed")
        spy = StoreSpy(store)
        response = await client.get("/read")
        assert "set-cookie" not in response.headers
        assert spy.writes == 0


async def test_without_nested_detection_an_in_place_change_alone_is_not_saved(
    store: Store,
) -> None:
    async with client_for(app_with(store, NESTED, detect_nested_changes=False)) as client:
        await client.get("/seed")
        response = await client.get("/nested", params={"item": "apple"})
        assert "set-cookie" not in response.headers
        assert (await client.get("/read")).json() == {"cart": {"items": []}}
        response = await client.get("/forced", params={"item": "pear"})
        assert response.json() == {"modified": True}
        assert (await client.get("/read")).json() == {"cart": {"items": ["pear"]}}


@pytest.mark.parametrize("detect", [True, False])
async def test_an_in_place_change_is_saved_along_with_another_key(
    store: Store, detect: bool
) -> None:
    # Defect 12: Starlette writes the whole session when any key changed, so a second
    # flash message appended in place survives there; it must survive here too.
    async with client_for(app_with(store, NESTED, detect_nested_changes=detect)) as client:
        await client.get("/seed")
        await client.get("/flash", params={"item": "first"})
        await client.get("/flash", params={"item": "second"})
        data = (await client.get("/read")).json()
        assert data == {"cart": {"items": ["first", "second"]}, "seen": True}


async def test_save_every_request_renews_a_session_nobody_touched(
    store: Store, clock: FakeClock
) -> None:
    async with client_for(
        app_with(store, HANDLERS, save_every_request=True, max_age=100)
    ) as client:
        value = await start_session(client)
        clock.advance(60)
        response = await client.get("/untouched")
        # Same key on server stores; the cookie store re-signs its data with a new time.
        assert (cookie_value(response) == value) is not store.keeps_data_in_cookie
        assert "Max-Age=100" in response.headers["set-cookie"]
        assert response.headers["vary"] == "Cookie"
        clock.advance(60)  # 120 s after creation, 60 s after the renewal
        assert (await client.get("/read")).json() == {"fav_color": "blue"}


async def test_rolling_expiry_renews_a_session_at_most_once_per_renew_interval(
    store: Store, clock: FakeClock
) -> None:
    app = app_with(store, HANDLERS, save_every_request=True, max_age=3600, renew_interval=60)
    async with client_for(app) as client:
        await start_session(client)
        spy = StoreSpy(store)
        for _ in range(11):  # 55 s of requests every 5 s: within the interval
            clock.advance(5)
            assert "set-cookie" not in (await client.get("/read")).headers
        assert spy.writes == 0
        clock.advance(5)  # 60 s since the last save: renewed once
        renewed = await client.get("/read")
        assert "Max-Age=3600" in renewed.headers["set-cookie"]
        assert spy.writes == 1
        clock.advance(5)
        assert "set-cookie" not in (await client.get("/read")).headers
        assert spy.writes == 1


async def test_throttled_rolling_expiry_still_slides_past_max_age(
    store: Store, clock: FakeClock
) -> None:
    # max_age=100 caps the interval at a tenth of it, 10 s: a session read every 9 s for
    # five minutes never expires, though it is renewed only every other request.
    app = app_with(store, HANDLERS, save_every_request=True, max_age=100)
    async with client_for(app) as client:
        await start_session(client)
        spy = StoreSpy(store)
        for _ in range(34):
            clock.advance(9)
            assert (await client.get("/read")).json() == {"fav_color": "blue"}
        assert 10 <= spy.writes <= 17


async def test_throttled_rolling_expiry_still_honours_absolute_timeout(
    store: Store, clock: FakeClock
) -> None:
    app = app_with(store, HANDLERS, save_every_request=True, max_age=100, absolute_timeout=50)
    async with client_for(app) as client:
        await start_session(client)
        for _ in range(9):
            clock.advance(5)
            assert (await client.get("/read")).json() == {"fav_color": "blue"}
        clock.advance(6)  # 51 s after creation, however often it was renewed
        assert (await client.get("/read")).json() == {}


async def test_without_save_every_request_max_age_counts_from_the_last_save(
    store: Store, clock: FakeClock
) -> None:
    async with client_for(app_with(store, HANDLERS, max_age=100)) as client:
        await start_session(client)
        clock.advance(60)
        assert "set-cookie" not in (await client.get("/untouched")).headers
        assert (await client.get("/read")).json() == {"fav_color": "blue"}
        clock.advance(41)
        assert (await client.get("/read")).json() == {}


async def test_save_every_request_writes_nothing_for_unknown_cookies(store: Store) -> None:
    server_side_only(store, "a cookie session cannot become unknown: its data travels with it")
    async with client_for(app_with(store, HANDLERS, save_every_request=True)) as client:
        value = await start_session(client)
        await client.get("/flush")
        client.cookies.clear()
        spy = StoreSpy(store)
        response = await client.get("/untouched", headers=sent(value))
        assert "set-cookie" not in response.headers
        assert spy.writes == 0


@pytest.mark.parametrize(
    "cookie",
    [
        "",
        "garbage",
        "a.b",
        "x" * 5000,
        "\u00e9t\u00e9",
        "valid-looking-key.with-a-wrong-signature-aaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
)
async def test_a_bad_cookie_gives_a_fresh_session_without_store_io(
    store: Store, cookie: str
) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        spy = StoreSpy(store)
        headers = {"cookie": f"session={cookie}".encode()}
        response = await client.get("/read", headers=headers)
        assert response.status_code == 200
        assert response.json() == {}
        assert spy.calls == {}
        assert "set-cookie" not in response.headers


async def test_a_tampered_cookie_gives_a_fresh_session(store: Store) -> None:
    async with client_for(app_with(store, HANDLERS)) as client:
        value = await start_session(client)
        client.cookies.clear()
        tampered = value[:-1] + ("A" if value[-1] != "A" else "B")
        response = await client.get("/read", headers=sent(tampered))
        assert response.json() == {}


async def test_an_unknown_validly_signed_key_is_never_adopted(store: Store) -> None:
    from asgi_sessions.cookies import Signer

    planted_key = "k" * 43
    planted = Signer([SECRET_FOR_SIGNING], salt="asgi_sessions.cookie").sign(planted_key)
    async with client_for(app_with(store, HANDLERS)) as client:
        response = await client.get("/set", headers=sent(planted))
        issued = cookie_value(response)
        assert issued.rpartition(".")[0] != planted_key
        assert await store.load(planted_key) is None


SECRET_FOR_SIGNING = "test-secret-key-that-is-long-enough-000"


async def test_an_expired_session_loads_empty(store: Store, clock: FakeClock) -> None:
    async with client_for(app_with(store, HANDLERS, max_age=10)) as client:
        await start_session(client)
        clock.advance(11)
        assert (await client.get("/read")).json() == {}


async def test_key_rotation_verifies_old_cookies_and_signs_with_the_first(store: Store) -> None:
    old_app = app_with(store, HANDLERS, secret_key="old-secret")
    async with client_for(old_app) as client:
        old_cookie = await start_session(client)
    rotated = app_with(store, {**HANDLERS, "cycle": cycle}, secret_key=["new-secret", "old-secret"])
    async with client_for(rotated) as client:
        client.cookies.set("session", old_cookie)
        assert (await client.get("/read")).json() == {"fav_color": "blue"}
        new_cookie = cookie_value(await client.get("/set", params={"color": "green"}))
    only_new = app_with(store, HANDLERS, secret_key="new-secret")
    async with client_for(only_new) as client:
        assert (await client.get("/read", headers=sent(new_cookie))).json() == {
            "fav_color": "green"
        }
        client.cookies.clear()
        assert (await client.get("/read", headers=sent(old_cookie))).json() == {}


async def test_an_unencodable_value_raises_type_error_naming_the_key(store: Store) -> None:
    async def bad(session: Session, request: Request) -> Any:
        session["ok"] = 1
        session["when"] = object()
        return {}

    async with client_for(app_with(store, {"bad": bad, **HANDLERS})) as client:
        spy = StoreSpy(store)
        with pytest.raises(TypeError, match="'when'"):
            await client.get("/bad")
        assert spy.writes == 0


async def test_a_save_after_a_concurrent_logout_answers_400_and_does_not_resurrect(
    store: Store,
) -> None:
    server_side_only(store, "no server-side record, so a concurrent logout cannot be detected")
    import asyncio

    loaded = asyncio.Event()
    logged_out = asyncio.Event()

    async def slow_write(session: Session, request: Request) -> Any:
        loaded.set()
        await logged_out.wait()
        session["late"] = True
        return {}

    app = app_with(store, {**HANDLERS, "slow": slow_write})
    async with client_for(app) as client:
        value = await start_session(client)

        async def logout_when_loaded() -> httpx.Response:
            await loaded.wait()
            response = await client.get("/flush", headers=sent(value))
            logged_out.set()
            return response

        client.cookies.clear()
        slow, logout = await asyncio.gather(
            client.get("/slow", headers=sent(value)), logout_when_loaded()
        )
        assert logout.status_code == 200
        assert slow.status_code == 400
        assert "deleted before the request completed" in slow.text
        assert "set-cookie" not in slow.headers
        assert await store.load(value.rpartition(".")[0]) is None


async def test_concurrent_requests_changing_different_keys_both_survive(store: Store) -> None:
    server_side_only(store, "no per-key merge: the last response's cookie wins")
    import asyncio

    both_loaded = asyncio.Barrier(2)

    async def put(session: Session, request: Request) -> Any:
        await both_loaded.wait()
        session[request.query_params["k"]] = True
        return {}

    async with client_for(app_with(store, {**HANDLERS, "put": put})) as client:
        value = await start_session(client)
        client.cookies.clear()
        cookies = sent(value)
        await asyncio.gather(
            client.get("/put", params={"k": "a"}, headers=cookies),
            client.get("/put", params={"k": "b"}, headers=cookies),
        )
        response = await client.get("/read", headers=cookies)
        assert response.json() == {"fav_color": "blue", "a": True, "b": True}
