"""Issue 22, items 7 and 9, through real HTTP on every store.

7. Rolling expiry: a throttled renewal never lets an active session expire. The renewal
   interval is at most a tenth of the idle window that applies to *this* session
   (``set_expiry(n)``, else ``max_age``), and the cookie's ``Max-Age`` ends with the
   record: a client whose requests come within nine tenths of its window of each other is
   never signed out, neither by the server nor by its browser.
9. Explicit saves: lists and dicts the view was handed before ``await session.save()``
   stay watched against what that save wrote, so an in-place change made after it is
   saved (by the next save or the response) and an unchanged one is not written again.

The browser here is simulated on the fake clock (httpx's cookie jar keeps real time): it
drops its cookie when the last ``Max-Age`` runs out, as a real one does.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from asgi_sessions import Session, Store
from tests.clock import FakeClock
from tests.support import StoreSpy, app_with, client_for, run_websocket

_MAX_AGE = re.compile(r"Max-Age=(-?\d+)", re.IGNORECASE)


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every store, the cookie store included (a renewal there is a new cookie)."""
    return any_store


@pytest.fixture
def clock(clock: FakeClock) -> FakeClock:
    # Whole seconds, a minute ahead of real time (Redis expires keys by its own clock).
    clock.now = float(int(time.time()) + 60)
    return clock


class Browser:
    """One browser's cookie for the session, kept on the fake clock."""

    def __init__(self, client: httpx.AsyncClient, clock: FakeClock) -> None:
        self.client = client
        self.clock = clock
        self.value: str | None = None
        self.ends: float | None = None  # None: a browser-session cookie (no Max-Age)

    def live(self) -> bool:
        return self.value is not None and (self.ends is None or self.clock.now < self.ends)

    async def get(self, path: str, **params: Any) -> httpx.Response:
        self.client.cookies.clear()
        headers = {"cookie": f"session={self.value}"} if self.live() else {}
        response = await self.client.get(path, params=params, headers=headers)
        header = response.headers.get("set-cookie")
        if header is not None:
            value = header.split(";", 1)[0].partition("=")[2]
            found = _MAX_AGE.search(header)
            age = int(found[1]) if found else None
            if not value or (age is not None and age <= 0):
                self.value = self.ends = None
            else:
                self.value = value
                self.ends = None if age is None else self.clock.now + age
        return response


async def login(session: Session, request: Request) -> Any:
    session["user"] = "alice"
    session["cart"] = ["apple"]
    kind, seconds = request.query_params["expiry"].split(":")
    if kind == "int":
        session.set_expiry(int(seconds))
    elif kind == "timedelta":
        session.set_expiry(timedelta(seconds=int(seconds)))
    return {"key": session.session_key}


async def read(session: Session, request: Request) -> Any:
    return {"data": dict(session), "key": session.session_key}


async def stored_end(store: Store, browser: Browser) -> float:
    """When the store says the session the browser's last response named ends."""
    response = await browser.get("/read")
    record = await store.get(response.json()["key"])
    assert record is not None
    return record.expire_date.timestamp()


# -- 7: rolling expiry ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expiry", "renew_interval", "gap"),
    [
        ("int:30", 60, 20),  # the case: renewal interval above the window
        ("int:20", 30, 17),  # the window's nine tenths, exactly (18), less a second
        ("int:90", 60, 80),
    ],
)
async def test_an_active_client_with_a_short_set_expiry_is_never_signed_out_by_throttled_renewals(
    store: Store, clock: FakeClock, expiry: str, renew_interval: int, gap: int
) -> None:
    app = app_with(
        store,
        {"login": login, "read": read},
        save_every_request=True,
        renew_interval=renew_interval,
    )
    async with client_for(app) as client:
        browser = Browser(client, clock)
        await browser.get("/login", expiry=expiry)
        window = int(expiry.split(":")[1])
        spy = StoreSpy(store)
        for _ in range(12):
            # Now and then a request right after another (the throttle skips its renewal).
            for pause in (gap, 1):
                clock.advance(pause)
                assert browser.live(), "the browser dropped the cookie of an active client"
                response = await browser.get("/read")
                assert response.json()["data"] == {"user": "alice", "cart": ["apple"]}
                # The cookie, and the record behind it, outlive the next request's gap.
                assert browser.ends is not None and browser.ends >= clock.now + 0.9 * window
        # Throttled all the same: the requests one second after a renewal wrote nothing.
        assert spy.writes == 12


@pytest.mark.parametrize(
    ("expiry", "options"),
    [
        ("int:30", {}),
        ("none:0", {"max_age": 100}),
        ("timedelta:50", {}),  # a fixed moment: renewals do not move it
        ("int:30", {"absolute_timeout": 45}),  # the cap: renewals stop short of it
    ],
    ids=["set_expiry", "max_age", "fixed_moment", "absolute_timeout"],
)
async def test_a_skipped_renewal_leaves_the_cookie_and_the_record_ending_together(
    store: Store, clock: FakeClock, expiry: str, options: dict[str, Any]
) -> None:
    app = app_with(store, {"login": login, "read": read}, save_every_request=True, **options)
    async with client_for(app) as client:
        browser = Browser(client, clock)
        await browser.get("/login", expiry=expiry)
        for _ in range(3):
            clock.advance(12)
            renewed = await browser.get("/read")  # due, unless the end is a fixed moment
            clock.advance(1)
            skipped = await browser.get("/read")  # within the interval: no write, no cookie
            assert "set-cookie" not in skipped.headers
            assert skipped.json()["data"] == renewed.json()["data"] != {}
            # No Max-Age ends the browser's copy before the record, nor after it.
            assert browser.ends == await stored_end(store, browser)
        # Past that end both are gone together: the browser stops sending the cookie, and
        # the server refuses it too.
        assert browser.ends is not None
        last, clock.now = browser.value, browser.ends
        assert not browser.live()
        client.cookies.clear()
        response = await client.get("/read", headers={"cookie": f"session={last}"})
        assert response.json()["data"] == {}


# -- 9: explicit saves ------------------------------------------------------------------


async def seed(session: Session, request: Request) -> Any:
    session["cart"] = ["apple"]
    session["prefs"] = {"theme": "dark"}
    return {}


async def save_then_append(session: Session, request: Request) -> Any:
    cart = session["cart"]
    prefs = session.get("prefs")
    session["saves"] = session.get("saves", 0) + 1
    await session.save()  # writes "saves"
    cart.append("pear")  # in place, after the save: the response must save it
    prefs["theme"] = "light"
    if request.query_params.get("mark"):
        session.modified = True  # Django's rule, for detect_nested_changes=False
    if request.query_params.get("other"):
        session["seen"] = True  # a request that saves anyway writes changed containers
    return {}


async def save_twice(session: Session, request: Request) -> Any:
    cart = session["cart"]
    await session.save()
    cart.append("pear")
    await session.save()  # the WebSocket pattern: every change goes by an explicit save
    cart.append("plum")
    return {}


async def read_all(session: Session, request: Request) -> Any:
    return dict(session)


NESTED = {"seed": seed, "save_then_append": save_then_append, "twice": save_twice, "read": read_all}


@pytest.mark.parametrize(
    ("detect", "params"),
    [(True, {}), (False, {"mark": "1"}), (False, {"other": "1"})],
    ids=["detected", "modified_true", "saving_anyway"],
)
async def test_a_list_handed_out_before_an_explicit_save_and_changed_after_it_is_saved(
    store: Store, detect: bool, params: dict[str, str]
) -> None:
    app = app_with(store, NESTED, detect_nested_changes=detect)
    async with client_for(app) as client:
        await client.get("/seed")
        await client.get("/save_then_append", params=params)
        data = (await client.get("/read")).json()
        assert data["cart"] == ["apple", "pear"]
        assert data["prefs"] == {"theme": "light"}
        if not detect:
            return
        await client.get("/twice")
        assert (await client.get("/read")).json()["cart"] == ["apple", "pear", "pear", "plum"]


async def test_without_detection_a_change_after_an_explicit_save_follows_djangos_rule(
    store: Store,
) -> None:
    # detect_nested_changes=False and nothing else to save: not written (set modified).
    app = app_with(store, NESTED, detect_nested_changes=False)
    async with client_for(app) as client:
        await client.get("/seed")
        await client.get("/save_then_append")
        assert (await client.get("/read")).json()["cart"] == ["apple"]


async def test_an_unchanged_list_handed_out_before_an_explicit_save_is_not_written_again(
    store: Store,
) -> None:
    async def read_save_read(session: Session, request: Request) -> Any:
        cart = session["cart"]
        session["seen"] = True
        await session.save()
        return {"cart": list(cart)}

    app = app_with(store, {**NESTED, "rsr": read_save_read})
    async with client_for(app) as client:
        await client.get("/seed")
        spy = StoreSpy(store)
        response = await client.get("/rsr")
        assert response.json() == {"cart": ["apple"]}
        assert spy.writes == 1  # the explicit save; the response has nothing left to write


async def test_a_websocket_handler_that_saves_then_changes_a_held_list_saves_it_at_its_next_save(
    store: Store,
) -> None:
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        session = await websocket.state.session
        cart = session["cart"]
        cart.append("pear")
        await session.save()
        cart.append("plum")  # the same list, changed again after the save
        await session.save()
        await websocket.close()

    app = app_with(store, NESTED)
    app.router.routes.append(WebSocketRoute("/ws", ws))
    async with client_for(app) as client:
        cookie = (await client.get("/seed")).headers["set-cookie"].split(";")[0].split("=", 1)[1]
        await run_websocket(app, "/ws", cookie)
        if store.keeps_data_in_cookie:
            return  # no response carries the new cookie: the data cannot reach the browser
        client.cookies.clear()
        data = (await client.get("/read", headers={"cookie": f"session={cookie}"})).json()
        assert data["cart"] == ["apple", "pear", "plum"]
