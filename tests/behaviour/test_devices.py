"""Your devices: each signed-in session shows where it is, on every server store (issue 25)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from asgi_sessions import ImproperlyConfigured, Session, SessionMiddleware, Store
from asgi_sessions.devices import MAX_USER_AGENT, decode_device, device_label, encode_device
from tests.clock import FakeClock
from tests.support import SECRET, StoreSpy, app_with

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)


async def sign_in(session: Session, request: Request) -> Any:
    session["user"] = request.query_params["user"]
    session.owner = request.query_params["user"]
    await session.save()
    return {"public_id": session.public_id}


async def sign_out(session: Session, request: Request) -> Any:
    session.owner = None
    return {}


async def note(session: Session, request: Request) -> Any:
    session["note"] = request.query_params.get("text", "x")
    return {}


async def read(session: Session, request: Request) -> Any:
    return {"user": session.get("user")}


async def devices(session: Session, request: Request) -> Any:
    store: Store = request.app.state.store
    return [
        {
            "label": entry.label,
            "user_agent": entry.user_agent,
            "ip": entry.ip,
            "this_device": entry.public_id == session.public_id,
            "last_seen": entry.last_seen.timestamp(),
        }
        for entry in await store.list_sessions(session.owner or "")
    ]


HANDLERS = {"sign_in": sign_in, "sign_out": sign_out, "note": note, "read": read}


@asynccontextmanager
async def browser(
    store: Store, user_agent: str, address: str = "203.0.113.7", **options: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """One device: its own cookie jar, user agent and client address."""
    app = app_with(store, {**HANDLERS, "devices": devices}, **options)
    app.state.store = store
    transport = httpx.ASGITransport(app=app, client=(address, 50123))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers={"user-agent": user_agent}
    ) as client:
        yield client


async def listed(store: Store, owner: str = "alice") -> list[Any]:
    return await store.list_sessions(owner)


async def test_a_sign_in_records_the_user_agent_and_no_address_by_default(store: Store) -> None:
    async with browser(store, FIREFOX) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
    (entry,) = await listed(store)
    assert entry.user_agent == FIREFOX
    assert entry.ip is None


@pytest.mark.parametrize(
    ("record_ip", "address", "kept"),
    [
        (True, "203.0.113.7", "203.0.113.7"),
        ((24, 48), "203.0.113.7", "203.0.113.0/24"),
        ((24, 48), "2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ((24, 48), "unix-socket-peer", None),  # no address to take a network of
    ],
)
async def test_record_ip_keeps_the_address_or_only_its_network(
    store: Store, record_ip: Any, address: str, kept: str | None
) -> None:
    async with browser(store, FIREFOX, address, record_ip=record_ip) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
    (entry,) = await listed(store)
    assert entry.ip == kept


async def test_other_requests_never_rewrite_the_device(store: Store) -> None:
    async with browser(store, FIREFOX) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
        # The same cookie sent with another user agent (a browser update): a save that
        # does not change the owner keeps the device it signed in with.
        await laptop.get("/note", headers={"user-agent": "Changed/1.0"})
    (entry,) = await listed(store)
    assert entry.user_agent == FIREFOX


async def test_each_owner_change_records_the_device_that_made_it(store: Store) -> None:
    async with browser(store, FIREFOX) as shared:
        await shared.get("/sign_in", params={"user": "alice"})
        await shared.get("/sign_in", params={"user": "bob"}, headers={"user-agent": IPHONE})
    assert await listed(store, "alice") == []
    (entry,) = await listed(store, "bob")
    assert entry.user_agent == IPHONE


async def test_signing_out_forgets_the_device_and_signing_in_again_records_it_afresh(
    store: Store,
) -> None:
    async with browser(store, FIREFOX, record_ip=True) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
        await laptop.get("/note")  # keeps data, so the record outlives the sign-out
        await laptop.get("/sign_out")
        assert await listed(store) == []
        await laptop.get("/sign_in", params={"user": "alice"}, headers={"user-agent": IPHONE})
    (entry,) = await listed(store)
    assert (entry.user_agent, entry.ip) == (IPHONE, "203.0.113.7")


async def test_a_session_created_signed_in_records_its_device(store: Store) -> None:
    async with browser(store, IPHONE) as phone:
        response = await phone.get("/sign_in", params={"user": "alice"})
    (entry,) = await listed(store)
    assert entry.public_id == response.json()["public_id"]
    assert entry.label == "Safari on iPhone"


async def test_the_listing_marks_this_device_for_each_of_two_devices(
    store: Store, clock: FakeClock
) -> None:
    async with browser(store, FIREFOX) as laptop, browser(store, IPHONE) as phone:
        await laptop.get("/sign_in", params={"user": "alice"})
        clock.advance(1)  # oldest first: the laptop's row, then the phone's
        await phone.get("/sign_in", params={"user": "alice"})
        seen_by_laptop = (await laptop.get("/devices")).json()
        seen_by_phone = (await phone.get("/devices")).json()
    assert [(d["label"], d["this_device"]) for d in seen_by_laptop] == [
        ("Firefox on Linux", True),
        ("Safari on iPhone", False),
    ]
    assert [d["this_device"] for d in seen_by_phone] == [False, True]


async def test_a_long_user_agent_is_cut(store: Store) -> None:
    async with browser(store, "A" * 5_000) as odd:
        await odd.get("/sign_in", params={"user": "alice"})
    (entry,) = await listed(store)
    assert entry.user_agent == "A" * MAX_USER_AGENT


async def test_last_seen_rides_on_renewals_and_adds_no_write_per_request(
    store: Store, clock: FakeClock
) -> None:
    async with browser(store, FIREFOX, save_every_request=True, renew_interval=60) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
        signed_in = (await listed(store))[0].last_seen
        spy = StoreSpy(store)
        clock.advance(30)
        for _ in range(5):
            await laptop.get("/read")
        assert spy.writes == 0  # within renew_interval: reads write nothing
        assert (await listed(store))[0].last_seen == signed_in
        clock.advance(31)
        await laptop.get("/read")  # the renewal that happens anyway carries it
        assert spy.writes == 1
    assert (await listed(store))[0].last_seen.timestamp() == pytest.approx(clock.now)


async def test_without_rolling_expiry_read_only_requests_write_nothing(
    store: Store, clock: FakeClock
) -> None:
    async with browser(store, FIREFOX) as laptop:
        await laptop.get("/sign_in", params={"user": "alice"})
        spy = StoreSpy(store)
        clock.advance(3600)
        await laptop.get("/read")
        assert spy.writes == 0
        await laptop.get("/note")  # a save moves last seen
    assert (await listed(store))[0].last_seen.timestamp() == pytest.approx(clock.now)


async def test_the_cookie_store_keeps_no_device_in_the_cookie() -> None:
    from asgi_sessions.stores.cookie import CookieStore

    store = CookieStore()
    async with browser(store, "B" * 400) as client:
        response = await client.get("/sign_in", params={"user": "alice"})
    assert "B" * 20 not in response.headers["set-cookie"]


def test_record_ip_refuses_anything_but_false_true_or_two_prefixes() -> None:
    for wrong in ((24,), (33, 48), (24, 129), "24", 24):
        with pytest.raises(ImproperlyConfigured, match=r"record_ip must be"):
            SessionMiddleware(app_with, SECRET, record_ip=wrong)


def test_labels_name_browser_and_device_and_fall_back_to_the_raw_string(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("ua_parser")  # a dev dependency: present wherever the suite runs
    assert device_label(FIREFOX) == "Firefox on Linux"
    assert device_label(IPHONE) == "Safari on iPhone"
    assert device_label("curl/8.0") == "curl"
    assert device_label(None) == "Unknown device"
    assert device_label("something odd") == "something odd"
    # Without the [devices] extra: the raw user agent.
    monkeypatch.setitem(sys.modules, "ua_parser", None)
    from asgi_sessions import devices

    devices._label.cache_clear()
    try:
        assert device_label(FIREFOX) == FIREFOX
    finally:
        devices._label.cache_clear()


def test_a_stored_device_that_is_junk_reads_as_unknown() -> None:
    assert decode_device(encode_device("UA", "10.0.0.0/24")) == ("UA", "10.0.0.0/24")
    for junk in (None, "", "not json", "[1]", '{"ua": 5}', '{"ip": ["x"]}'):
        assert decode_device(junk) == (None, None)


async def test_sign_in_events_carry_the_device_for_new_sign_in_mails(store: Store) -> None:
    from asgi_sessions import SessionEvent, SessionEvents

    seen: list[SessionEvent] = []

    async def record(event: SessionEvent) -> None:
        seen.append(event)

    events = SessionEvents(on_event=record)
    async with browser(store, IPHONE, record_ip=True, events=events) as phone:
        await phone.get("/sign_in", params={"user": "alice"})  # created signed in
        await phone.get("/sign_in", params={"user": "bob"}, headers={"user-agent": FIREFOX})
        await phone.get("/note")
    kinds = [(e.type, e.owner, e.user_agent, e.ip) for e in seen if e.type != "rotated"]
    assert kinds == [
        ("created", "alice", IPHONE, "203.0.113.7"),
        ("owner_changed", "alice", IPHONE, "203.0.113.7"),
        ("owner_changed", "bob", FIREFOX, "203.0.113.7"),
    ]
