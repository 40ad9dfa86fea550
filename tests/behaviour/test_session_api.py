"""The Session object itself: Django parity for flags, errors and expiry, on every store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from asgi_sessions import Session, SessionNotLoaded, Store
from tests.clock import FakeClock
from tests.support import headers_with, make_config, saved_session


async def fresh(store: Store, **options: object) -> Session:
    session = Session(make_config(store, **options))
    return await session


async def existing(store: Store) -> Session:
    config, cookie = await saved_session(store, {"a": 1, "b": 2})
    return await Session(config, headers_with(cookie))


async def test_a_new_session_is_empty_unmodified_and_unaccessed(store: Store) -> None:
    session = Session(make_config(store))
    assert not session.accessed
    assert not session.modified
    assert session.is_empty
    assert session.session_key is None
    await session
    assert session.accessed
    assert not session.modified
    assert len(session) == 0


@pytest.mark.parametrize(
    "operation",
    [
        lambda s: s["a"],
        lambda s: s.get("a"),
        lambda s: "a" in s,
        lambda s: len(s),
        lambda s: list(s),
        lambda s: s.keys(),
        lambda s: s.items(),
        lambda s: s.values(),
        lambda s: s.__setitem__("a", 1),
        lambda s: s.pop("a", None),
        lambda s: s.setdefault("a", 1),
        lambda s: s.update(a=1),
        lambda s: s.clear(),
        lambda s: s.set_expiry(10),
        lambda s: s.copy(),
    ],
)
async def test_touching_data_before_loading_raises_session_not_loaded(
    store: Store, operation: object
) -> None:
    session = Session(make_config(store))
    with pytest.raises(SessionNotLoaded, match=r"await request\.state\.session"):
        operation(session)  # type: ignore[operator]


async def test_awaiting_twice_loads_once_and_returns_the_same_object(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = Session(config, headers_with(cookie))
    loads = 0
    original = store.load

    async def counting(key: str) -> object:
        nonlocal loads
        loads += 1
        return await original(key)

    store.load = counting  # type: ignore[method-assign]
    import asyncio

    first, second = await asyncio.gather(session.load(), session.load())
    assert first is second is session is await session
    assert loads == 1
    assert session == {"a": 1}


async def test_reading_methods_do_not_mark_modified(store: Store) -> None:
    session = await existing(store)
    _ = session["a"], session.get("zz"), "a" in session, list(session.keys())
    _ = list(session.items()), list(session.values()), len(session), list(session)
    assert session.accessed
    assert not session.modified


async def test_pop_marks_modified_only_when_the_key_existed(store: Store) -> None:
    session = await existing(store)
    assert session.pop("missing", "default") == "default"
    assert not session.modified
    with pytest.raises(KeyError):
        session.pop("missing")
    assert session.pop("a") == 1
    assert session.modified


async def test_setdefault_marks_modified_only_when_inserting(store: Store) -> None:
    session = await existing(store)
    assert session.setdefault("a", 99) == 1
    assert not session.modified
    assert session.setdefault("new", 3) == 3
    assert session.modified


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update({}),
        lambda s: s.update(c=3),
        lambda s: s.update([("c", 3)]),
        lambda s: s.clear(),
        lambda s: s.__setitem__("a", 1),
        lambda s: s.__delitem__("a"),
        lambda s: s.popitem(),
        lambda s: s.__ior__({"c": 3}),
    ],
)
async def test_every_top_level_mutator_marks_modified(store: Store, mutate: object) -> None:
    session = await existing(store)
    mutate(session)  # type: ignore[operator]
    assert session.modified


async def test_deleting_a_missing_key_raises_and_does_not_mark_modified(store: Store) -> None:
    session = await existing(store)
    with pytest.raises(KeyError):
        del session["missing"]
    assert not session.modified


async def test_a_non_str_key_raises_type_error_at_assignment(store: Store) -> None:
    session = await fresh(store)
    with pytest.raises(TypeError, match="Session keys must be str"):
        session[1] = "x"  # type: ignore[index]
    assert not session.modified


async def test_saved_data_round_trips_through_the_store(store: Store) -> None:
    data = {"s": "é", "i": 1, "f": 1.5, "b": True, "n": None, "l": [1, "2"], "d": {"k": [None]}}
    config, cookie = await saved_session(store, data)
    assert await Session(config, headers_with(cookie)) == data


async def test_a_save_writes_only_changed_keys_over_a_concurrent_change(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1, "b": 2})
    first = await Session(config, headers_with(cookie))
    second = await Session(config, headers_with(cookie))
    first["a"] = 10
    del second["b"]
    second["c"] = 3
    await first.save()
    await second.save()
    assert await Session(config, headers_with(cookie)) == {"a": 10, "c": 3}


async def test_clear_replaces_the_whole_record(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1, "b": 2})
    session = await Session(config, headers_with(cookie))
    session.clear()
    session["z"] = 26
    await session.save()
    assert await Session(config, headers_with(cookie)) == {"z": 26}


async def test_modified_true_writes_every_key(store: Store) -> None:
    config, cookie = await saved_session(store, {"cart": ["a"]})
    session = await Session(config, headers_with(cookie))
    session["cart"].append("b")
    session.modified = True
    await session.save()
    assert await Session(config, headers_with(cookie)) == {"cart": ["a", "b"]}


async def test_cycle_key_without_loading_first_keeps_the_data(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = Session(config, headers_with(cookie))
    old_key = cookie.rpartition(".")[0]
    await session.cycle_key()
    assert session.session_key not in (None, old_key)
    assert session == {"a": 1}
    assert await store.load(old_key) is None
    assert (await store.load(session.session_key)) is not None  # type: ignore[arg-type]


async def test_cycle_key_of_an_empty_session_stores_nothing(store: Store) -> None:
    session = await fresh(store)
    await session.cycle_key()
    assert session.session_key is None
    assert session.modified


async def test_flush_clears_data_and_key(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = await Session(config, headers_with(cookie))
    await session.flush()
    assert session == {}
    assert session.session_key is None
    assert session.modified and session.accessed
    assert await store.load(cookie.rpartition(".")[0]) is None


async def test_saving_an_emptied_session_deletes_it(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = await Session(config, headers_with(cookie))
    del session["a"]
    await session.save()
    assert session.session_key is None
    assert await store.load(cookie.rpartition(".")[0]) is None


async def test_save_of_an_unmodified_session_writes_nothing(store: Store) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = await Session(config, headers_with(cookie))
    before = await store.load(cookie.rpartition(".")[0])
    await session.save()
    after = await store.load(cookie.rpartition(".")[0])
    assert before is not None and after is not None
    assert after.updated_at == before.updated_at


async def test_the_store_keeps_a_hash_of_the_key_never_the_key(store: Store) -> None:
    from asgi_sessions.stores.base import hash_key

    session = await fresh(store)
    session["a"] = 1
    await session.save()
    key = session.session_key
    assert key is not None and len(key) >= 43  # 32 bytes of entropy, base64
    # A Redis Cluster store names the record by its slot tag and the key's hash.
    layout = getattr(store, "layout", None)
    stored_id = hash_key(key) if layout is None else layout.member(key)
    assert hash_key(key) in stored_id and key not in stored_id
    assert await store.read(key) is None
    assert await store.read(stored_id) is not None


# -- expiry -------------------------------------------------------------------------


async def test_default_expiry_is_max_age(store: Store) -> None:
    session = await fresh(store, max_age=600)
    assert session.get_expiry_age() == 600
    assert not session.get_expire_at_browser_close()


async def test_set_expiry_seconds_and_timedelta(store: Store, clock: FakeClock) -> None:
    session = await fresh(store)
    session.set_expiry(10)
    assert session.modified
    assert session.get_expiry_age() == 10
    assert session.get_expiry_date() == datetime.fromtimestamp(clock.now + 10, UTC)
    session.set_expiry(timedelta(seconds=20))
    assert session.get_expiry_age() == 20


async def test_set_expiry_aware_datetime(store: Store, clock: FakeClock) -> None:
    session = await fresh(store)
    when = datetime.fromtimestamp(clock.now, UTC) + timedelta(seconds=30)
    session.set_expiry(when)
    assert session.get_expiry_date() == when
    assert session.get_expiry_age() == 30
    with pytest.raises(ValueError, match="aware datetime"):
        session.set_expiry(datetime(2030, 1, 1))


async def test_set_expiry_rejects_other_types(store: Store) -> None:
    session = await fresh(store)
    for bad in ("10", 1.5, True):
        with pytest.raises(TypeError, match="set_expiry"):
            session.set_expiry(bad)  # type: ignore[arg-type]


async def test_set_expiry_zero_means_browser_close_and_none_resets(store: Store) -> None:
    session = await fresh(store, max_age=600)
    session.set_expiry(0)
    assert session.get_expire_at_browser_close()
    assert session.get_expiry_age() == 600  # the server still keeps it for max_age
    session.set_expiry(None)
    assert not session.get_expire_at_browser_close()
    browser = await fresh(store, max_age=None)
    assert browser.get_expire_at_browser_close()


async def test_a_custom_expiry_survives_a_reload(store: Store, clock: FakeClock) -> None:
    config, cookie = await saved_session(store, {"a": 1})
    session = await Session(config, headers_with(cookie))
    session.set_expiry(5)
    await session.save()
    again = await Session(config, headers_with(cookie))
    assert again.get_expiry_age() == 5
    clock.advance(6)
    assert await Session(config, headers_with(cookie)) == {}


async def test_absolute_timeout_caps_life_from_creation(store: Store, clock: FakeClock) -> None:
    config, cookie = await saved_session(store, {"a": 1}, max_age=100, absolute_timeout=150)
    for _ in range(3):
        clock.advance(45)
        session = await Session(config, headers_with(cookie))
        assert session["a"] == 1
        session["touch"] = clock.now
        await session.save()
        assert session.get_expiry_age() <= 150
    clock.advance(16)  # 151 s after creation, 16 s after the last save
    assert await Session(config, headers_with(cookie)) == {}


async def test_repr_shows_the_data_only_once_loaded(store: Store) -> None:
    session = Session(make_config(store))
    assert repr(session) == "<Session (not loaded)>"
    await session
    session["a"] = 1
    assert repr(session) == "<Session {'a': 1}>"
    assert session | {"b": 2} == {"a": 1, "b": 2}
    assert {"b": 2} | session == {"b": 2, "a": 1}
    assert session != {"a": 2}
    assert list(reversed(session)) == ["a"]


# -- values are decoded when first used --------------------------------------------

DATA = {"user": "alice", "cart": ["apple", {"n": 2}], "flags": {"beta": True}}


@pytest.mark.parametrize(
    "use",
    [
        lambda s: json.dumps(s, sort_keys=True) == json.dumps(DATA, sort_keys=True),
        lambda s: dict(s) == DATA,
        lambda s: {**s} == DATA,
        lambda s: s == DATA,
        lambda s: not (s != DATA),
        lambda s: s.copy() == DATA,
        lambda s: dict(s.items()) == DATA,
        lambda s: sorted(map(json.dumps, s.values())) == sorted(map(json.dumps, DATA.values())),
        lambda s: (s | {}) == DATA,
        lambda s: ({} | s) == DATA,
        lambda s: all(f"{k!r}: {v!r}" in repr(s) for k, v in DATA.items()),
        lambda s: {k: s[k] for k in s} == DATA,
        lambda s: s.get("cart") == DATA["cart"],
        lambda s: s.setdefault("flags", None) == DATA["flags"],
        lambda s: s.pop("cart") == DATA["cart"],
        lambda s: (lambda k, v: DATA[k] == v)(*s.popitem()),
    ],
)
async def test_every_way_of_reading_a_loaded_session_sees_decoded_values(
    store: Store, use: object
) -> None:
    config, cookie = await saved_session(store, DATA)
    session = await Session(config, headers_with(cookie))
    assert use(session)  # type: ignore[operator]


async def test_a_forced_save_writes_values_nobody_read_back_unchanged(store: Store) -> None:
    config, cookie = await saved_session(store, DATA)
    session = await Session(config, headers_with(cookie))
    session.modified = True  # every key is written, none was decoded
    await session.save()
    assert await Session(config, headers_with(cookie)) == DATA


async def test_a_value_the_serializer_cannot_read_fails_the_load_naming_its_key(
    clock: FakeClock,
) -> None:
    from asgi_sessions import MemoryStore, SessionStoreError
    from tests.support import session_write

    store = MemoryStore(clock=clock)
    config = make_config(store)
    key = "k" * 43
    await store.save(key, session_write(clock(), set={"ok": '"fine"', "bad": "{nope"}, create=True))
    with pytest.raises(SessionStoreError, match=r"'bad'.*serializer changed"):
        await Session(config, headers_with(config.signer.sign(key)))
