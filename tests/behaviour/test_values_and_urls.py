"""Regression tests for issue 22 (defects 8, 10 and 12), on every store they apply to.

8. a NUL character in a key or the owner answers 503 on PostgreSQL, and works elsewhere
10. ``OrderedDict``, ``Counter`` and ``defaultdict`` values with non-``str`` keys are
    stored with stringified keys (colliding keys lose a value)
11. ``redis://host/sessions`` means database 0 (in tests/stores/test_redis_urls.py)
12. on a Redis Cluster the cookies of one owner share a slot tag (documented, kept)
"""

from __future__ import annotations

from collections import Counter, OrderedDict, defaultdict, namedtuple
from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request

from asgi_sessions import Session, Store
from tests.support import StoreSpy, app_with, client_for, cookie_value, sent


@pytest.fixture
def store(any_store: Store) -> Store:
    """Every store, the cookie store included."""
    return any_store


async def _put(session: Session, request: Request) -> Any:
    for name, value in request.query_params.items():
        session[name] = value
    return {}


async def _read(session: Session, request: Request) -> Any:
    return {"data": session.copy(), "owner": session.owner}


async def _refused_in_the_view(store: Store, change: Callable[[Session], object]) -> str:
    """Run ``change`` in a view on a stored session; return the TypeError's message after
    checking that nothing reached the store and the stored data is intact."""
    raised: list[str] = []

    async def assign(session: Session, request: Request) -> Any:
        try:
            change(session)
        except TypeError as exc:
            raised.append(str(exc))
        return {"modified": session.modified}

    app = app_with(store, {"put": _put, "read": _read, "assign": assign})
    async with client_for(app) as client:
        response = await client.get("/put", params={"kept": "yes"})
        cookie = sent(cookie_value(response))
        spy = StoreSpy(store)
        response = await client.get("/assign", headers=cookie)
        assert response.status_code == 200
        assert len(raised) == 1, raised
        assert response.json() == {"modified": False}
        assert spy.writes == 0
        read = (await client.get("/read", headers=cookie)).json()
        assert read == {"data": {"kept": "yes"}, "owner": None}
    return raised[0]


async def _round_trip(store: Store, change: Callable[[Session], object]) -> dict[str, Any]:
    """Run ``change`` in a view, then return what the next request reads back."""

    async def write(session: Session, request: Request) -> Any:
        change(session)
        return {}

    app = app_with(store, {"write": write, "read": _read})
    async with client_for(app) as client:
        response = await client.get("/write")
        assert response.status_code == 200
        read = await client.get("/read", headers=sent(cookie_value(response)))
        assert read.status_code == 200
        return read.json()  # type: ignore[no-any-return]


# -- 8. NUL characters -------------------------------------------------------------------

NUL_KEY = "a\x00b"


def _or_assign(session: Session) -> None:
    session |= {NUL_KEY: 1}


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.__setitem__(NUL_KEY, 1),
        lambda s: s.update({NUL_KEY: 1}),
        lambda s: s.update([(NUL_KEY, 1)]),
        lambda s: s.update(**{NUL_KEY: 1}),
        lambda s: s.setdefault(NUL_KEY, 1),
        _or_assign,
        lambda s: s.__setitem__("\x00", "only a NUL"),
    ],
    ids=["set", "update-mapping", "update-pairs", "update-kwargs", "setdefault", "ior", "nul"],
)
async def test_a_nul_character_in_a_key_is_refused_in_the_view_on_every_store(
    store: Store, change: Callable[[Session], object]
) -> None:
    message = await _refused_in_the_view(store, change)
    assert "NUL" in message and "cannot be stored" in message


@pytest.mark.parametrize("owner", ["alice\x00", "\x00", "lone \ud800 surrogate"])
async def test_an_owner_with_a_nul_or_a_lone_surrogate_is_refused_in_the_view_on_every_store(
    store: Store, owner: str
) -> None:
    message = await _refused_in_the_view(store, lambda s: setattr(s, "owner", owner))
    assert "owner" in message and "cannot be stored" in message


async def test_a_nul_character_inside_a_value_is_stored_intact_on_every_store(
    store: Store,
) -> None:
    values = {"text": "a\x00b", "list": ["\x00", 1], "dict": {"k\x00": "\x00v"}}
    assert (await _round_trip(store, lambda s: s.update(values)))["data"] == values


async def test_listing_or_revoking_with_a_nul_character_finds_nothing_on_every_store(
    store: Store,
) -> None:
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore keeps no owner index")

    async def log_in(session: Session, request: Request) -> Any:
        session.owner = "alice"
        session["seen"] = True
        return {}

    async with client_for(app_with(store, {"login": log_in})) as client:
        assert (await client.get("/login")).status_code == 200
    assert await store.list_sessions("alice\x00") == []
    assert await store.revoke("alice\x00", "0" * 24) == 0
    assert await store.revoke("alice", "\x00" * 24) == 0
    assert await store.revoke_all("alice\x00") == 0
    assert len(await store.list_sessions("alice")) == 1
    # No session has that public id, so none is kept.
    assert await store.revoke_all("alice", keep="\x00" * 24) == 1
    assert await store.list_sessions("alice") == []


# -- 10. dict subclasses with non-str keys ---------------------------------------------

Pair = namedtuple("Pair", "left right")


class Items(list[Any]):
    """A list subclass: JSON encodes it as a list."""


@pytest.mark.parametrize(
    ("value", "bad_key"),
    [
        (OrderedDict([(1, "a"), ("1", "b")]), "1"),
        (Counter({1: 2}), "1"),
        (defaultdict(list, {1: ["x"]}), "1"),
        (OrderedDict([(True, "t")]), "True"),
        (OrderedDict([(None, "n")]), "None"),
        (OrderedDict([(1.5, "f")]), "1.5"),
        ([OrderedDict([(2, "in a list")])], "2"),
        ({"outer": Counter({3: 1})}, "3"),
        ({"ok": [{"deeper": defaultdict(int, {4: 1})}]}, "4"),
        (Items([{5: "in a list subclass"}]), "5"),
        (("in", "a", {6: "tuple"}), "6"),
        (Pair("x", {7: "namedtuple"}), "7"),
        ({"a": Items([OrderedDict([(8, "x")])])}, "8"),
        ({("tuple", "key"): 1}, "tuple"),
        (OrderedDict([(("tuple", "key"), 1)]), "tuple"),
    ],
    ids=lambda item: type(item).__name__ if not isinstance(item, str) else item,
)
async def test_a_mapping_with_a_non_str_key_is_refused_in_the_view_on_every_store(
    store: Store, value: Any, bad_key: str
) -> None:
    message = await _refused_in_the_view(store, lambda s: s.__setitem__("value", value))
    assert "'value'" in message and "cannot be stored" in message
    assert bad_key in message


async def test_dict_subclasses_with_str_keys_are_stored_as_plain_dicts_on_every_store(
    store: Store,
) -> None:
    values = {
        "ordered": OrderedDict([("b", 1), ("a", 2)]),
        "counter": Counter({"x": 3}),
        "default": defaultdict(list, {"k": [1]}),
        "nested": [OrderedDict([("in", Counter({"y": 1}))])],
    }
    read = await _round_trip(store, lambda s: s.update(values))
    assert read["data"] == {
        "ordered": {"b": 1, "a": 2},
        "counter": {"x": 3},
        "default": {"k": [1]},
        "nested": [{"in": {"y": 1}}],
    }


# -- 12. slot tags on a Redis Cluster ----------------------------------------------------


async def test_the_cookies_of_one_owner_share_a_slot_tag_on_a_redis_cluster_only(
    store: Store,
) -> None:
    """Documented in the README (Redis Cluster and Sentinel): on a Redis Cluster every
    cookie of one owner starts with the same 4 characters (the session shares its owner's
    slot), so two cookies of one user can be linked to each other, though not to the
    user. Other stores' cookies share nothing."""
    if store.keeps_data_in_cookie:
        pytest.skip("CookieStore: the cookie holds the data, not a key")

    async def log_in(session: Session, request: Request) -> Any:
        session.owner = request.query_params["user"]
        session["seen"] = True
        return {}

    cookies: dict[str, list[str]] = {"alice": [], "bob": []}
    for user in ("alice", "alice", "bob"):
        async with client_for(app_with(store, {"login": log_in})) as client:
            response = await client.get("/login", params={"user": user})
            cookies[user].append(cookie_value(response))
    (first, second), (other,) = cookies["alice"], cookies["bob"]
    assert len({first, second, other}) == 3
    if getattr(getattr(store, "layout", None), "cluster", False):
        assert first[:4] == second[:4]
        assert other[:4] != first[:4]  # two owners' tags are equal once in 16.7 million
    else:
        assert first[:4] != second[:4]  # random keys: equal once in 16.7 million
