"""Regression tests for the defects a review found (issue 13), one or more per defect.

Each runs on every store it applies to. The model checker (tests/model/) searches for
the classes of bug these belong to; these pin the everyday cases a user reported.

1. emptying a session wipes keys another request added
2. ``modified = True`` cancels pending deletions
3. a save writes owner and expiry from a stale copy
4. ``absolute_timeout`` turns browser-session cookies into persistent ones
5. Set-Cookie appended to the app's own header list
6. an explicit save that hits a concurrent logout answers 500
7. the process never exits / a closed store silently reopens
8. C-level encoders see internal placeholders
9. values neither refused nor stored intact
10. a session that expires mid-request answers 400
11. CLI traceback on a bad URL, passwords in messages, the set_expiry docstring
12. nested changes lost where Starlette keeps them (in test_write_policy.py)
"""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from asgi_sessions import Session, SessionStoreError, Store, store_from_url
from tests.clock import FakeClock
from tests.support import StoreSpy, app_with, client_for, cookie_value, sent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every store, the cookie store included; server-only rules skip it with the reason."""
    return any_store


def server_side_only(store: Store, reason: str) -> None:
    if store.keeps_data_in_cookie:
        pytest.skip(f"CookieStore: {reason}")


class Gate:
    """Lets a test hold a request after it loaded its session, until released."""

    def __init__(self) -> None:
        self.loaded = asyncio.Event()
        self.release = asyncio.Event()

    async def hold(self) -> None:
        self.loaded.set()
        await self.release.wait()


async def _put(session: Session, request: Request) -> Any:
    for name, value in request.query_params.items():
        session[name] = value
    return {}


async def _read(session: Session, request: Request) -> Any:
    return {"data": session.copy(), "key": session.session_key}


async def _start(client: Any, **data: str) -> dict[str, str]:
    response = await client.get("/put", params=data)
    assert response.status_code == 200
    return sent(cookie_value(response))


# -- 1. emptying a session -------------------------------------------------------------


async def test_popping_the_last_key_keeps_a_key_another_request_added(store: Store) -> None:
    server_side_only(store, "no per-key merge: the last response's cookie wins")
    gate = Gate()

    async def consume_flash(session: Session, request: Request) -> Any:
        session.pop("flash")
        await gate.hold()  # finishes last
        return {}

    app = app_with(store, {"put": _put, "read": _read, "consume": consume_flash})
    async with client_for(app) as client:
        cookie = await _start(client, flash="saved!")
        consumer = asyncio.create_task(client.get("/consume", headers=cookie))
        await gate.loaded.wait()
        assert (await client.get("/put", params={"cart": "apple"}, headers=cookie)).is_success
        gate.release.set()
        consumed = await consumer
        assert consumed.status_code == 200
        assert "Max-Age=0" not in consumed.headers.get("set-cookie", "")
        assert (await client.get("/read", headers=cookie)).json()["data"] == {"cart": "apple"}


async def test_popping_the_last_key_of_an_untouched_session_deletes_it_and_its_cookie(
    store: Store,
) -> None:
    async def consume_flash(session: Session, request: Request) -> Any:
        session.pop("flash")
        return {}

    app = app_with(store, {"put": _put, "read": _read, "consume": consume_flash})
    async with client_for(app) as client:
        cookie = await _start(client, flash="saved!")
        key = (await client.get("/read", headers=cookie)).json()["key"]
        consumed = await client.get("/consume", headers=cookie)
        assert "Max-Age=0" in consumed.headers["set-cookie"]
        if not store.keeps_data_in_cookie:
            assert await store.get(key) is None


async def test_clear_stays_a_whole_session_operation_over_a_concurrent_key(store: Store) -> None:
    server_side_only(store, "no per-key merge: the last response's cookie wins")
    gate = Gate()

    async def clear(session: Session, request: Request) -> Any:
        session.clear()
        session["fresh"] = "start"
        await gate.hold()
        return {}

    app = app_with(store, {"put": _put, "read": _read, "clear": clear})
    async with client_for(app) as client:
        cookie = await _start(client, old="1")
        clearer = asyncio.create_task(client.get("/clear", headers=cookie))
        await gate.loaded.wait()
        await client.get("/put", params={"cart": "apple"}, headers=cookie)
        gate.release.set()
        assert (await clearer).status_code == 200
        assert (await client.get("/read", headers=cookie)).json()["data"] == {"fresh": "start"}


# -- 2. modified = True and deletions ------------------------------------------------------


async def test_modified_true_keeps_a_deletion_made_in_the_same_request(store: Store) -> None:
    async def seed(session: Session, request: Request) -> Any:
        session.update(user="alice", cart=[1])
        return {}

    async def log_out_keeping_the_cart(session: Session, request: Request) -> Any:
        del session["user"]
        session["cart"].append(2)
        session.modified = True
        return {}

    app = app_with(store, {"seed": seed, "read": _read, "logout": log_out_keeping_the_cart})
    async with client_for(app) as client:
        await client.get("/seed")
        await client.get("/logout")
        assert (await client.get("/read")).json()["data"] == {"cart": [1, 2]}


# -- 3. metadata from a stale copy ------------------------------------------------------


def _owner_and_expiry_app(store: Store, gate: Gate, **options: Any) -> Any:
    async def stale_write(session: Session, request: Request) -> Any:
        await gate.hold()
        session["unrelated"] = "x"
        return {}

    async def stale_read(session: Session, request: Request) -> Any:
        await gate.hold()
        return {"user": session.get("user")}

    async def bind(session: Session, request: Request) -> Any:
        session.owner = "alice"
        session.set_expiry(60)
        return {}

    handlers = {"put": _put, "read": _read, "stale": stale_write, "look": stale_read}
    return app_with(store, {**handlers, "bind": bind}, **options)


@pytest.mark.parametrize("endpoint", ["stale", "look"])
async def test_a_stale_request_keeps_the_owner_and_expiry_another_request_set(
    store: Store, clock: FakeClock, endpoint: str
) -> None:
    server_side_only(store, "the cookie store keeps no owner index")
    gate = Gate()
    # Rotation off, so that the stale request saves to the very record that was bound.
    app = _owner_and_expiry_app(
        store, gate, rotate_on_owner_change=False, save_every_request=True, renew_interval=0
    )
    async with client_for(app) as client:
        cookie = await _start(client, user="alice")
        key = (await client.get("/read", headers=cookie)).json()["key"]
        stale = asyncio.create_task(client.get(f"/{endpoint}", headers=cookie))
        await gate.loaded.wait()
        bound = await client.get("/bind", headers=cookie)
        assert bound.status_code == 200
        clock.advance(5)
        gate.release.set()
        if store.new_key_on_owner_change:
            # A cluster store moves the session into its owner's slot under a new key even
            # with rotation off: the stale request finds its key dead, as after a login.
            assert (await stale).status_code == 400
            key = cookie_value(bound).rpartition(".")[0]
            renewed_at = clock() - 5
        else:
            assert (await stale).status_code == 200
            renewed_at = clock()
        (listed,) = await store.list_sessions("alice")
        record = await store.get(key)
        assert record is not None
        assert record.owner == "alice"
        assert listed.expire_date == record.expire_date
        # set_expiry(60) holds: the last save renewed it for 60 s, not for 14 days.
        assert record.expire_date.timestamp() == pytest.approx(renewed_at + 60)
        assert await store.revoke_all("alice") == 1


async def test_a_stale_save_after_the_owner_rotated_the_key_answers_400(
    store: Store,
) -> None:
    server_side_only(store, "the cookie store keeps no owner index")
    gate = Gate()
    async with client_for(_owner_and_expiry_app(store, gate)) as client:
        cookie = await _start(client, user="alice")
        stale = asyncio.create_task(client.get("/stale", headers=cookie))
        await gate.loaded.wait()
        bound = await client.get("/bind", headers=cookie)
        new_cookie = sent(cookie_value(bound))
        gate.release.set()
        assert (await stale).status_code == 400  # the old key died with the login
        assert len(await store.list_sessions("alice")) == 1
        data = (await client.get("/read", headers=new_cookie)).json()["data"]
        assert data == {"user": "alice"}


# -- 4. absolute_timeout and browser-session cookies ------------------------------------


@pytest.mark.parametrize("how", ["max_age=None", "set_expiry(0)"])
async def test_absolute_timeout_keeps_a_browser_session_cookie_without_max_age(
    store: Store, clock: FakeClock, how: str
) -> None:
    async def dont_remember_me(session: Session, request: Request) -> Any:
        session["user"] = "alice"
        if how == "set_expiry(0)":
            session.set_expiry(0)
        return {}

    options: dict[str, Any] = {"absolute_timeout": 3600}
    if how == "max_age=None":
        options["max_age"] = None
    app = app_with(store, {"login": dont_remember_me, "read": _read}, **options)
    async with client_for(app) as client:
        response = await client.get("/login")
        assert "max-age" not in response.headers["set-cookie"].lower()
        assert "expires" not in response.headers["set-cookie"].lower()
        clock.advance(3599)
        assert (await client.get("/read")).json()["data"] == {"user": "alice"}
        clock.advance(2)  # the server enforces the absolute timeout
        assert (await client.get("/read")).json()["data"] == {}


# -- 5. the app's own headers ----------------------------------------------------------


async def test_a_response_reused_across_requests_never_carries_one_users_cookie_to_another(
    store: Store,
) -> None:
    shared = PlainTextResponse("hello")  # module-level in a real app
    original = list(shared.raw_headers)

    async def greet(session: Session, request: Request) -> Response:
        if request.query_params.get("login"):
            session["user"] = request.query_params["login"]
        return shared

    app = app_with(store, {"greet": greet})
    async with client_for(app) as alice, client_for(app) as bob:
        logged_in = await alice.get("/greet", params={"login": "alice"})
        assert "set-cookie" in logged_in.headers
        anonymous = await bob.get("/greet")
        assert "set-cookie" not in anonymous.headers
        assert shared.raw_headers == original


# -- 6. an explicit save after a concurrent logout ----------------------------------------


async def test_an_explicit_save_after_a_concurrent_logout_answers_400(store: Store) -> None:
    server_side_only(store, "no server-side record, so a concurrent logout cannot be detected")
    gate = Gate()

    async def save_now(session: Session, request: Request) -> Any:
        await gate.hold()
        session["late"] = True
        await session.save()
        return {}

    async def logout(session: Session, request: Request) -> Any:
        await session.flush()
        return {}

    app = app_with(store, {"put": _put, "read": _read, "save": save_now, "logout": logout})
    async with client_for(app) as client:
        cookie = await _start(client, user="alice")
        key = (await client.get("/read", headers=cookie)).json()["key"]
        saver = asyncio.create_task(client.get("/save", headers=cookie))
        await gate.loaded.wait()
        assert (await client.get("/logout", headers=cookie)).status_code == 200
        gate.release.set()
        late = await saver
        assert late.status_code == 400
        assert "set-cookie" not in late.headers
        assert await store.get(key) is None


# -- 7. closed stores and process exit ---------------------------------------------------


async def test_a_closed_store_refuses_use_with_a_clear_error(store: Store) -> None:
    server_side_only(store, "the cookie store holds nothing to close")
    await store.aclose()
    with pytest.raises(SessionStoreError, match="is closed"):
        await store.load("k" * 43)
    with pytest.raises(SessionStoreError, match="is closed"):
        await store.list_sessions("alice")


EXITS = """
import asyncio, httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from asgi_sessions import SessionMiddleware

async def home(request):
    session = await request.state.session
    session["n"] = 1
    return PlainTextResponse("ok")

app = Starlette(routes=[Route("/", home)])
app.add_middleware(SessionMiddleware, secret_key="s" * 32)  # the default SQLite store

async def main():
    transport = httpx.ASGITransport(app=app)  # no lifespan: nobody closes the store
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/")).text == "ok"

asyncio.run(main())
print("done")
"""


def test_a_process_using_the_default_store_without_lifespan_exits(tmp_path: Path) -> None:
    finished = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(EXITS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "done"


# -- 8. C encoders, pickle and deepcopy ----------------------------------------------------


async def test_c_encoders_pickle_and_deepcopy_see_plain_decoded_values(store: Store) -> None:
    data = {"user": "alice", "cart": [1, {"sku": "x"}], "n": 2.5, "flag": None}

    async def seed(session: Session, request: Request) -> Any:
        session.update(data)
        return {}

    async def encode(session: Session, request: Request) -> Response:
        assert pickle.loads(pickle.dumps(session)) == data  # noqa: S301  (our own bytes)
        assert copy.deepcopy(session) == data
        assert type(copy.deepcopy(session)) is dict
        assert msgspec.json.decode(msgspec.json.encode(session)) == data
        return Response(orjson.dumps(session), media_type="application/json")

    async with client_for(app_with(store, {"seed": seed, "encode": encode})) as client:
        await client.get("/seed")
        assert (await client.get("/encode")).json() == data


# -- 9. values neither refused nor stored intact ------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("name", "lone \ud800 surrogate"),
        ("lone \udc00 key", "x"),
        ("ids", {1: "a", "1": "b"}),
        ("nested", [{"ok": {2: "int key inside"}}]),
        ("tags", {"a", "b"}),
        ("ratio", float("nan")),
    ],
)
async def test_an_unstorable_value_raises_type_error_in_the_view_and_the_data_stays_intact(
    store: Store, key: str, value: Any
) -> None:
    raised: list[str] = []

    async def assign(session: Session, request: Request) -> Any:
        try:
            session[key] = value
        except TypeError as exc:
            raised.append(str(exc))
        return {}

    app = app_with(store, {"put": _put, "read": _read, "assign": assign})
    async with client_for(app) as client:
        cookie = await _start(client, kept="yes")
        spy = StoreSpy(store)
        assert (await client.get("/assign", headers=cookie)).status_code == 200
        assert len(raised) == 1 and "cannot be stored" in raised[0]
        assert spy.writes == 0
        assert (await client.get("/read", headers=cookie)).json()["data"] == {"kept": "yes"}


async def test_a_non_str_top_level_key_raises_type_error(store: Store) -> None:
    async def assign(session: Session, request: Request) -> Any:
        with pytest.raises(TypeError, match="keys must be str"):
            session[1] = "a"  # type: ignore[index]
        return {}

    async with client_for(app_with(store, {"assign": assign})) as client:
        assert (await client.get("/assign")).status_code == 200


# -- 10. expiry during a request --------------------------------------------------------


@pytest.mark.parametrize("limit", ["max_age", "absolute_timeout"])
async def test_a_session_that_expires_mid_request_is_dropped_not_interrupted(
    store: Store, clock: FakeClock, limit: str
) -> None:
    gate = Gate()

    async def slow_write(session: Session, request: Request) -> Any:
        await gate.hold()
        session["late"] = "stale data must not live on"
        return PlainTextResponse("the app's own answer")

    options = {"max_age": 100} if limit == "max_age" else {"absolute_timeout": 100}
    app = app_with(store, {"put": _put, "read": _read, "slow": slow_write}, **options)
    async with client_for(app) as client:
        cookie = await _start(client, user="alice")
        key = (await client.get("/read", headers=cookie)).json()["key"]
        clock.advance(99)
        writer = asyncio.create_task(client.get("/slow", headers=cookie))
        await gate.loaded.wait()
        clock.advance(2)
        gate.release.set()
        response = await writer
        assert response.status_code == 200
        assert response.text == "the app's own answer"
        assert "Max-Age=0" in response.headers["set-cookie"]
        assert (await client.get("/read", headers=cookie)).json()["data"] == {}
        if not store.keeps_data_in_cookie:
            assert await store.get(key) is None


# -- 11. small defects ------------------------------------------------------------------


def test_the_cli_reports_a_malformed_url_in_one_line() -> None:
    finished = subprocess.run(
        [sys.executable, "-m", "asgi_sessions", "show", "redis://[::1", "KEY"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    assert finished.stderr.count("\n") == 1
    assert finished.stderr.startswith("error: Invalid Redis URL")


async def test_store_urls_never_show_their_password_in_errors_logs_or_repr(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = "redis://user:s3cret@127.0.0.1:1/0"
    caplog.set_level(logging.DEBUG, logger="asgi_sessions")
    store = store_from_url(url, socket_connect_timeout=0.2)
    async with store:
        assert "s3cret" not in repr(store)
        with pytest.raises(SessionStoreError) as failure:
            await store.load("k" * 43)
        assert "s3cret" not in str(failure.value)
        app = app_with(store, {"put": _put})
        async with client_for(app) as client:
            response = await client.get("/put", params={"a": "1"})
            assert response.status_code == 503
    for bad in ("redis://user:s3cret@[::1", "nosuch://user:s3cret@host"):
        with pytest.raises(ValueError) as refused:
            store_from_url(bad)
        assert "s3cret" not in str(refused.value)
    assert "s3cret" not in caplog.text


async def test_set_expiry_with_a_timedelta_is_a_fixed_moment_from_now(
    store: Store, clock: FakeClock
) -> None:
    async def remember(session: Session, request: Request) -> Any:
        session["user"] = "alice"
        session.set_expiry(timedelta(seconds=100))
        return {}

    app = app_with(store, {"remember": remember, "put": _put, "read": _read})
    async with client_for(app) as client:
        await client.get("/remember")
        clock.advance(60)
        await client.get("/put", params={"more": "1"})  # a later save does not extend it
        clock.advance(41)
        assert (await client.get("/read")).json()["data"] == {}
    assert "from now" in (Session.set_expiry.__doc__ or "")
