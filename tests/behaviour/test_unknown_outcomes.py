"""A write whose outcome the store cannot know never leaves the client without a working key.

Issue 22: a login rotates the key; on Redis with a replica the move is applied on the
master, then ``WAIT`` times out, and the 503 used to carry no ``Set-Cookie``: the browser
kept the old key (dead: the move killed it) and nobody held the new one. The same happens
after a lost reply, a timeout, or a PostgreSQL connection dropped after ``COMMIT``.

The rule (README, "Failure"): any store error from a create or a rotation is "maybe
applied" (``OutcomeUnknown`` carries the key it tried). The 503 then sets a cookie that
works either way: after a rotation a signed pair "new, else old" (the next request loads
the new key, else the old one, and gets a plain cookie for the one it found); after a
create the attempted key (unknown: a fresh session; stored: the user's). A retry
converges to one live session, the old key dead, and no session stays listed that
nobody can reach.

Faults are injected where a real store fails: in the write itself (``write``/``move``
of the SQL and memory stores, ``_run`` of the Redis store), either before the write or
after it ("apply, then raise": what a lost reply or a ``WAIT`` timeout does and what no
real part produces on demand). The ``WAIT`` case also runs for real, with a frozen
replica.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from asgi_sessions import RedisStore, Session, SessionStoreError, Store, store_from_url
from asgi_sessions.errors import OutcomeUnknown
from asgi_sessions.stores.base import hash_key, public_id_for
from tests.clock import FakeClock
from tests.support import app_with, client_for, cookie_value, sent


class Fault:
    """Makes one write of the store fail: ``before`` it applies, or ``after`` it did."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.kind: str | None = None
        self.skip = 0
        self.hits = 0
        # The Redis store writes through scripts (_run); the others through their hooks.
        hooks = ("_run",) if isinstance(store, RedisStore) else ("write", "move")
        for name in hooks:
            original = getattr(store, name)

            async def faulty(
                *args: Any, _original: Any = original, name: str = name, **kw: Any
            ) -> Any:
                if name == "_run" and args[0] != "saving a session":
                    return await _original(*args, **kw)  # Redis: not a session write
                kind = self._take()
                if kind == "before":
                    raise SessionStoreError("the store failed on purpose, before the write")
                result = await _original(*args, **kw)
                if kind == "after":
                    raise SessionStoreError("the reply was lost on purpose, after the write")
                return result

            setattr(store, name, faulty)

    def arm(self, kind: str, *, skip: int = 0) -> None:
        """Fail the next write (after ``skip`` writes that go through) in this ``kind``."""
        self.kind, self.skip = kind, skip

    def _take(self) -> str | None:
        if self.kind is None:
            return None
        if self.skip:
            self.skip -= 1
            return None
        kind, self.kind = self.kind, None
        self.hits += 1
        return kind


async def _put(session: Session, request: Any) -> Any:
    session["cart"] = [1]
    return {"key": session.session_key}


async def _login(session: Session, request: Any) -> Any:
    session["user"] = "alice"
    session.owner = "alice"  # rotates the key (rotate_on_owner_change)
    return {"key": session.session_key}


async def _peek(session: Session, request: Any) -> Any:
    return {"data": dict(session), "key": session.session_key, "owner": session.owner}


async def _logout(session: Session, request: Any) -> Any:
    await session.flush()
    return {"ok": True}


HANDLERS = {"put": _put, "login": _login, "peek": _peek, "logout": _logout}


class Site:
    def __init__(self, store: Store, client: httpx.AsyncClient, fault: Fault) -> None:
        self.store = store
        self.client = client
        self.fault = fault

    async def post(self, path: str, cookie: str | None) -> httpx.Response:
        return await self.client.post(path, headers=sent(cookie) if cookie else {"cookie": ""})

    async def cart(self) -> tuple[str, str]:
        """A stored anonymous session: (cookie value, key)."""
        response = await self.post("/put", None)
        assert response.status_code == 200
        cookie = cookie_value(response)
        return cookie, (await self.post("/peek", cookie)).json()["key"]

    async def listed(self) -> list[str]:
        return [owned.public_id for owned in await self.store.list_sessions("alice")]

    def cluster(self) -> bool:
        return bool(getattr(getattr(self.store, "layout", None), "cluster", False))


@pytest.fixture
async def site(store: Store) -> AsyncIterator[Site]:
    fault = Fault(store)
    async with client_for(app_with(store, HANDLERS), raise_app_exceptions=False) as client:
        yield Site(store, client, fault)


def public_id(key: str) -> str:
    return public_id_for(hash_key(key))


def assert_unavailable_with_a_cookie(response: httpx.Response) -> str:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "private"
    return cookie_value(response)


async def follow(site: Site, cookie: str) -> tuple[dict[str, Any], str]:
    """The next request with the 503's cookie: it must reach a session and get a plain
    single-key cookie for it (the pair lives one round trip). Returns (peek, plain cookie)."""
    response = await site.post("/peek", cookie)
    assert response.status_code == 200
    seen: dict[str, Any] = response.json()
    assert seen["key"] is not None, "the client was left without a working key"
    plain = cookie_value(response)
    assert plain != cookie
    again = await site.post("/peek", plain)
    assert again.json() == seen
    assert "set-cookie" not in again.headers  # a plain cookie, read-only from now on
    return seen, plain


async def assert_one_reachable_session(site: Site, seen: dict[str, Any], old_key: str) -> None:
    """Either the rotation happened (new key, owned, old key dead) or it did not (the old
    key, as before): never both, and nothing listed that the client cannot reach."""
    assert seen["data"]["cart"] == [1]
    if seen["owner"] == "alice":
        assert seen["key"] != old_key
        assert seen["data"]["user"] == "alice"
        assert await site.store.get(old_key) is None
        assert await site.listed() == [public_id(seen["key"])]
    else:
        # The old key, exactly as before the login: none of the login's data reached it
        # (it may be a planted key), on a Redis Cluster's two-step move too.
        assert seen["key"] == old_key
        assert "user" not in seen["data"]
        assert await site.listed() == []


async def test_a_rotation_that_applied_before_its_error_leaves_the_client_a_working_key(
    site: Site,
) -> None:
    cookie, old_key = await site.cart()
    # On a cluster the login moves the session across slots: seal, then create. Losing
    # the create's reply is the "applied" case there (the store then undoes it itself).
    site.fault.arm("after", skip=1 if site.cluster() else 0)
    pending = assert_unavailable_with_a_cookie(await site.post("/login", cookie))
    assert site.fault.hits == 1
    seen, _ = await follow(site, pending)
    await assert_one_reachable_session(site, seen, old_key)
    if not site.cluster():
        assert seen["owner"] == "alice"  # signed in, cart kept: the move did happen


async def test_a_rotation_that_did_not_apply_leaves_the_client_its_old_key(site: Site) -> None:
    cookie, old_key = await site.cart()
    site.fault.arm("before")
    pending = assert_unavailable_with_a_cookie(await site.post("/login", cookie))
    seen, plain = await follow(site, pending)
    assert (seen["key"], seen["owner"]) == (old_key, None)
    await assert_one_reachable_session(site, seen, old_key)
    # The retried login rotates once more and converges: one session, the old key dead.
    retried = await site.post("/login", plain)
    assert retried.status_code == 200
    final = (await site.post("/peek", cookie_value(retried))).json()
    assert final["owner"] == "alice" and final["key"] != old_key
    await assert_one_reachable_session(site, final, old_key)


@pytest.mark.parametrize("kind", ["before", "after"])
async def test_a_login_retried_with_the_pending_cookie_converges_to_one_live_session(
    site: Site, kind: str
) -> None:
    cookie, old_key = await site.cart()
    site.fault.arm(kind, skip=1 if site.cluster() and kind == "after" else 0)
    pending = assert_unavailable_with_a_cookie(await site.post("/login", cookie))
    # The browser retries at once, with the pair: whichever key it finds, it logs in once.
    retried = await site.post("/login", pending)
    assert retried.status_code == 200
    final = (await site.post("/peek", cookie_value(retried))).json()
    assert final["owner"] == "alice"
    await assert_one_reachable_session(site, final, old_key)
    # The pair itself is spent: it finds the live session (the move had happened and the
    # retry kept its key) or nothing (the retry rotated again), never a second session.
    again = (await site.post("/peek", pending)).json()
    assert again["key"] == (final["key"] if kind == "after" and not site.cluster() else None)


@pytest.mark.parametrize("kind", ["before", "after"])
async def test_a_create_whose_outcome_is_unknown_sends_the_attempted_key(
    site: Site, kind: str
) -> None:
    site.fault.arm(kind)
    # A new session that gets an owner is created owned: a create, not a rotation.
    attempted = assert_unavailable_with_a_cookie(await site.post("/login", None))
    response = await site.post("/peek", attempted)
    assert response.status_code == 200
    seen = response.json()
    if kind == "after":
        assert (seen["owner"], seen["data"]) == ("alice", {"user": "alice"})
        assert await site.listed() == [public_id(seen["key"])]  # reachable: no ghost
    else:
        # An unknown key: a fresh session, no write, no error, nothing listed.
        assert (seen["key"], seen["data"]) == (None, {})
        assert await site.listed() == []


async def test_a_failed_plain_save_keeps_the_cookie_and_a_retry_converges(site: Site) -> None:
    cookie, key = await site.cart()
    site.fault.arm("after")
    failed = await site.post("/put", cookie)
    assert failed.status_code == 503
    assert "set-cookie" not in failed.headers  # same key: the cookie already works
    retried = await site.post("/put", cookie)
    assert retried.status_code == 200
    seen = (await site.post("/peek", cookie)).json()
    assert (seen["key"], seen["data"]) == (key, {"cart": [1]})


async def test_a_logout_with_the_pending_cookie_ends_both_keys(site: Site) -> None:
    cookie, old_key = await site.cart()
    site.fault.arm("after", skip=1 if site.cluster() else 0)
    pending = assert_unavailable_with_a_cookie(await site.post("/login", cookie))
    out = await site.post("/logout", pending)
    assert out.status_code == 200
    assert "Max-Age=0" in out.headers["set-cookie"]
    assert await site.listed() == []
    assert await site.store.get(old_key) is None
    assert (await site.post("/peek", pending)).json()["key"] is None


async def test_the_pending_cookie_is_signed_as_a_whole_and_never_logged(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    cookie, old_key = await site.cart()
    site.fault.arm("after", skip=1 if site.cluster() else 0)
    with caplog.at_level(logging.DEBUG, logger="asgi_sessions"):
        pending = assert_unavailable_with_a_cookie(await site.post("/login", cookie))
    payload = pending.rpartition(".")[0]
    new_key, _, old = payload.partition("~")
    assert old == old_key
    logged = " ".join(record.getMessage() for record in caplog.records)
    for secret in (new_key, old_key, pending, cookie):
        assert secret not in logged
    # A half of the pair under the pair's signature is no cookie at all.
    signature = pending.rpartition(".")[2]
    for forged in (f"{new_key}.{signature}", f"{old_key}.{signature}", f"{old}~{new_key}.x"):
        assert (await site.post("/peek", forged)).json()["key"] is None


def test_outcome_unknown_keeps_the_key_out_of_its_message() -> None:
    error = OutcomeUnknown("Redis failed while saving a session.", attempted_key="k" * 43)
    assert isinstance(error, SessionStoreError)
    assert "k" * 43 not in str(error) and "k" * 43 not in repr(error)


# -- the real thing: WAIT times out after the master applied the move ------------------


# Sentinel only: on a cluster, a login moves the session to another slot and, when the
# move fails, undoes it with writes that wait for the same frozen replica; if the owner's
# slot shares that replica's master, the undo stops half-way and the old record stays
# sealed until it expires (redis_layout.py, "signed out, never signed in twice").
@pytest.mark.parametrize("topology", ["sentinel"])
async def test_a_login_whose_wait_times_out_keeps_the_user_signed_in_or_out_never_locked_out(
    topology: str, request: pytest.FixtureRequest, clock: FakeClock
) -> None:
    from tests.redis_cluster import cluster_replica, frozen

    url = request.getfixturevalue(f"redis_{topology}_url")
    async with store_from_url(url, clock=clock, replica_timeout=0.2) as store:
        assert isinstance(store, RedisStore)
        app = app_with(store, HANDLERS)
        async with client_for(app, raise_app_exceptions=False) as client:
            site = Site(store, client, Fault.__new__(Fault))
            cookie, old_key = await site.cart()
            name = store.layout.name(old_key)
            if topology == "cluster":
                replica = cluster_replica(request.getfixturevalue("redis_cluster"), name)
            else:
                topo: Any = request.getfixturevalue("redis_sentinel")
                replica = next(s for s in topo.data if s.port != topo.master_port())
            with frozen(replica):
                refused = await site.post("/login", cookie)
            pending = assert_unavailable_with_a_cookie(refused)
            seen, _ = await follow(site, pending)
            await assert_one_reachable_session(site, seen, old_key)
            if topology == "sentinel":
                assert seen["owner"] == "alice"  # the master applied the move: signed in
