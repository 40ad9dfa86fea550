"""Retiring a secret: a cookie that only an old secret verifies is signed again.

With ``secret_key=[new, old]``, a request whose session cookie verifies only under
``old`` gets the same session back in a ``Set-Cookie`` signed with ``new``: the same key,
the same Max-Age rules, and no store write (the cookie store re-signs its payload, and
re-seals an encrypted one). After one ``max_age`` every cookie still in use carries the
new signature, so ``old`` can go.
"""

from __future__ import annotations

import re
import unittest.mock
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import PlainTextResponse

from asgi_sessions import Session, Store
from asgi_sessions.cookies import Signer
from asgi_sessions.stores.cookie import CookieStore
from tests.clock import FakeClock
from tests.support import StoreSpy, app_with, client_for, cookie_value, sent

OLD, NEW = "old-secret-retired-soon-0000000000000", "new-secret-in-use-now-000000000000000"
MAX_AGE = 3600
SALT = "asgi_sessions.cookie"


async def put(session: Session, request: Request) -> Any:
    session.update(request.query_params)
    return {}


async def read(session: Session, request: Request) -> Any:
    return {"data": session.copy(), "key": session.session_key}


async def fail(session: Session, request: Request) -> Any:
    return PlainTextResponse("boom", status_code=500)


async def forget(session: Session, request: Request) -> Any:
    await session.flush()
    return {}


HANDLERS = {"put": put, "read": read, "fail": fail, "forget": forget}


def app(store: Store, *secrets: str, **options: Any) -> Any:
    options.setdefault("max_age", MAX_AGE)
    return app_with(store, HANDLERS, secret_key=list(secrets), **options)


async def old_cookie(store: Store, **options: Any) -> str:
    """A session saved while ``OLD`` was the only secret."""
    async with client_for(app(store, OLD, **options)) as client:
        return cookie_value(await client.get("/put", params={"user": "alice"}))


def max_age(response: httpx.Response) -> int | None:
    match = re.search(r"Max-Age=(\d+)", response.headers["set-cookie"])
    return None if match is None else int(match[1])


async def test_an_old_secrets_cookie_is_signed_again_with_the_same_key_and_no_write(
    any_store: Store, clock: FakeClock
) -> None:
    cookie = await old_cookie(any_store)
    clock.advance(100)
    spy = StoreSpy(any_store)
    async with client_for(app(any_store, NEW, OLD)) as client:
        response = await client.get("/read", headers=sent(cookie))
    assert response.json()["data"] == {"user": "alice"}
    renewed = cookie_value(response)
    assert renewed != cookie
    # The same key (or cookie payload), now under the current secret only.
    assert Signer([NEW], salt=SALT).unsign(renewed) == Signer([OLD], salt=SALT).unsign(cookie)
    assert Signer([OLD], salt=SALT).unsign(renewed) is None
    assert spy.writes == 0
    # Max-Age counts to the record's end as loaded: re-signing never extends a session.
    assert max_age(response) == pytest.approx(MAX_AGE - 100, abs=1)
    assert response.headers["cache-control"] == "private"
    assert "Cookie" in response.headers["vary"]

    async with client_for(app(any_store, NEW)) as client:  # OLD retired
        again = await client.get("/read", headers=sent(renewed))
        assert again.json()["data"] == {"user": "alice"}
        assert "set-cookie" not in again.headers  # signed with the current secret already


async def test_a_browser_session_cookie_is_signed_again_without_max_age(
    any_store: Store,
) -> None:
    cookie = await old_cookie(any_store, max_age=None)
    async with client_for(app(any_store, NEW, OLD, max_age=None)) as client:
        response = await client.get("/read", headers=sent(cookie))
    assert response.json()["data"] == {"user": "alice"}
    assert max_age(response) is None


async def test_the_cache_remembers_an_old_secrets_cookie_and_still_signs_it_again(
    store: Store,
) -> None:
    cookie = await old_cookie(store)
    async with client_for(app(store, NEW, OLD)) as client:
        first = cookie_value(await client.get("/read", headers=sent(cookie)))
        client.cookies.clear()
        verify = Signer.verify
        with unittest.mock.patch.object(Signer, "verify", autospec=True) as spy:
            spy.side_effect = verify
            # Another tab still sends the old cookie: no HMAC this time, same answer.
            response = await client.get("/read", headers=sent(cookie))
            assert spy.call_count == 0
    assert cookie_value(response) == first


async def test_requests_that_never_load_the_session_are_not_touched(any_store: Store) -> None:
    cookie = await old_cookie(any_store)
    spy = StoreSpy(any_store)
    async with client_for(app(any_store, NEW, OLD)) as client:
        response = await client.get("/untouched", headers=sent(cookie))
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    assert spy.calls["load"] == 0


async def test_nothing_is_reissued_on_a_5xx_or_for_a_session_that_is_gone(
    store: Store,
) -> None:
    cookie = await old_cookie(store)
    async with client_for(app(store, NEW, OLD)) as client:
        failed = await client.get("/fail", headers=sent(cookie))
        assert failed.status_code == 500
        assert "set-cookie" not in failed.headers
        key = (await client.get("/read", headers=sent(cookie))).json()["key"]
        client.cookies.clear()
        await store.delete(key)
        gone = await client.get("/read", headers=sent(cookie))
        assert gone.json() == {"data": {}, "key": None}
        assert "set-cookie" not in gone.headers


async def test_a_save_in_the_same_request_sends_one_cookie_under_the_new_secret(
    any_store: Store,
) -> None:
    cookie = await old_cookie(any_store)
    spy = StoreSpy(any_store)
    async with client_for(app(any_store, NEW, OLD)) as client:
        response = await client.get("/put", params={"theme": "dark"}, headers=sent(cookie))
    assert len(response.headers.get_list("set-cookie")) == 1
    assert Signer([NEW], salt=SALT).unsign(cookie_value(response)) is not None
    assert spy.calls["save"] == 1


async def test_a_flushed_session_deletes_its_cookie_rather_than_renewing_it(
    store: Store,
) -> None:
    cookie = await old_cookie(store)
    async with client_for(app(store, NEW, OLD)) as client:
        response = await client.get("/forget", headers=sent(cookie))
    assert response.headers["set-cookie"].startswith('session=""')


async def test_an_encrypted_cookie_is_sealed_again_with_the_new_secrets_key(
    clock: FakeClock,
) -> None:
    async with CookieStore(encrypt=True, clock=clock) as store:
        cookie = await old_cookie(store)
        async with client_for(app(store, NEW, OLD)) as client:
            renewed = cookie_value(await client.get("/read", headers=sent(cookie)))
    # A fresh store bound to NEW alone can still decrypt it: the body was sealed again.
    async with CookieStore(encrypt=True, clock=clock) as only_new:
        async with client_for(app(only_new, NEW)) as client:
            assert (await client.get("/read", headers=sent(renewed))).json()["data"] == {
                "user": "alice"
            }
            assert (await client.get("/read", headers=sent(cookie))).json()["data"] == {}
