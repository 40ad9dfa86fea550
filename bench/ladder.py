"""From the design's floor to ours, one named rule at a time (issue 24, memory write).

The minimal session of ``minimal_session.py`` (29374ed), then the same lean code with the
contract's rules added one by one, cumulatively: each rung is the least code that keeps
that rule, written for this one case (a memory store, a JSON session, a returning browser).
The last rung keeps every rule the request exercises; what ``ours-memory`` costs beyond it
is the price of being general (any store, events, importers, nested changes, owners,
expiry settings, rotation), not of a rule. A decided experiment: results in RESULTS.md.

    python -m bench.ladder time                        # every rung, interleaved, 3 runs
    valgrind --tool=cachegrind --cache-sim=no python -m bench.ladder ir RUNG write 200
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

from starlette.middleware import Middleware

from asgi_sessions.cookies import Signer
from asgi_sessions.errors import SessionInterrupted
from asgi_sessions.middleware import _vary_on_cookie
from asgi_sessions.serializers import JSONSerializer
from asgi_sessions.stores.base import (
    SessionWrite,
    Store,
    StoredSession,
    WriteOutcome,
    hash_key,
)
from bench.apps import (
    BASE_DATA,
    DUMMY_COOKIE,
    MAX_AGE,
    SECRET,
    Env,
    _noop,
    _ours_store,
    build,
    config,
    floor_app,
    session_app,
)
from bench.asgi import NotOK, headers, receive, scope, timed

RULES = ("signed", "per-key", "expiry", "hashed", "bound", "headers", "delete-wins")
RUNGS = ["minimal"] + [f"+{rule}" for rule in RULES]
KEY = "k" * 43
SERIALIZER = JSONSerializer()
SIGNER = Signer([SECRET], salt="asgi_sessions.cookie")
COOKIE_VALUE = SIGNER.sign(KEY)
_NOTHING: frozenset[str] = frozenset()
_NO_MERGES: dict[str, Any] = {}


class Record:
    __slots__ = ("created_at", "data", "expires_at", "updated_at")

    def __init__(self, data: Any, expires_at: float, created_at: float, updated_at: float):
        self.data, self.expires_at = data, expires_at
        self.created_at, self.updated_at = created_at, updated_at


class Lean:
    """One rung: the rules up to ``rung`` (an index into RUNGS) switched on."""

    def __init__(self, rung: int) -> None:
        on = set(RULES[:rung])
        self.signed, self.per_key, self.expiry = "signed" in on, "per-key" in on, "expiry" in on
        self.hashed, self.bound, self.headers = "hashed" in on, "bound" in on, "headers" in on
        self.delete_wins = "delete-wins" in on
        self.records: dict[str, Any] = {}
        self.verified: dict[bytes, tuple[str, str]] = {}  # Cookie header -> (value, key)
        sid = self.store_id(KEY)
        texts = {k: SERIALIZER.dumps(v) for k, v in BASE_DATA.items()}
        data: Any = texts if self.per_key else json.dumps(BASE_DATA)
        now = time.time()
        self.records[sid] = Record(data, now + MAX_AGE, now, now) if self.expiry else data
        self.cookie = f"session={COOKIE_VALUE if self.signed else KEY}".encode()
        if self.signed:
            self.verified[self.cookie] = (COOKIE_VALUE, KEY)

    def store_id(self, key: str) -> str:
        return hash_key(key) if self.hashed else key  # memoised, as ours


class LeanSession(dict[str, Any]):
    __slots__ = ("changed", "cookie_value", "headers", "key", "lean", "loaded", "record", "texts")

    def __init__(self, lean: Lean, request_headers: Any) -> None:
        self.lean, self.headers, self.key, self.loaded, self.changed = (
            lean,
            request_headers,
            None,
            False,
            False,
        )

    def __await__(self) -> Any:
        return self.load().__await__()

    async def load(self) -> LeanSession:
        if self.loaded:
            return self
        lean = self.lean
        for name, value in self.headers:
            if name == b"cookie":
                if lean.signed:  # a returning browser: the verified-header cache hits
                    hit = lean.verified.get(value)
                    if hit is not None:
                        self.cookie_value, self.key = hit
                else:
                    for part in value.split(b";"):
                        k, _, v = part.strip().partition(b"=")
                        if k == b"session":
                            self.key = v.decode()
        record = lean.records.get(lean.store_id(self.key)) if self.key else None
        if record is not None and lean.expiry:
            if record.expires_at <= time.time():
                record = None
        self.record = record
        if record is not None:
            data = record.data if lean.expiry else record
            if lean.per_key:
                loads = SERIALIZER.loads
                dict.update(self, {name: loads(text) for name, text in data.items()})
                self.changed = {}
            else:
                dict.update(self, json.loads(data))
        self.loaded = True
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        if self.lean.per_key:  # encoded now: an unstorable value raises in the view
            self.changed[key] = SERIALIZER.dumps(value)
        else:
            self.changed = True
        dict.__setitem__(self, key, value)

    def save(self) -> int | None:
        """Write the change; the cookie's Max-Age, or ``None`` if the record is gone."""
        lean = self.lean
        sid = lean.store_id(self.key or "new")
        records = lean.records
        current = records.get(sid)
        if lean.delete_wins and current is None:
            return None  # deleted meanwhile (a logout): never brought back
        if lean.per_key:
            data = dict((current.data if lean.expiry else current) if current else {})
            data.update(self.changed)
        else:
            data = json.dumps(self)
        if lean.bound and current is not None:
            del records[sid]  # re-inserted last: the most recently written
        if lean.expiry:
            now = time.time()
            created = current.created_at if current is not None else now
            records[sid] = record = Record(data, now + MAX_AGE, created, now)
            max_age = round(record.expires_at - now)
        else:
            records[sid] = data
            max_age = MAX_AGE
        if lean.bound and len(records) > 10_000:
            del records[next(iter(records))]
        return max_age


class LeanMiddleware:
    def __init__(self, app: Any, lean: Lean) -> None:
        self.app, self.lean = app, lean

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lean = self.lean
        session = LeanSession(lean, scope["headers"])
        scope.setdefault("state", {})["session"] = session

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start" and session.loaded:
                out = list(message.get("headers", ()))
                if lean.headers:
                    private = _vary_on_cookie(out)
                else:
                    out.append((b"vary", b"Cookie"))
                    private = False
                failed = lean.delete_wins and message["status"] >= 500
                if session.changed and not failed:
                    max_age = session.save()
                    if max_age is None:
                        await send({**message, "status": 400, "headers": []})
                        return
                    value = session.cookie_value if lean.signed else session.key
                    cookie = f"session={value}; path=/; Max-Age={max_age}; httponly; samesite=lax"
                    out.append((b"set-cookie", cookie.encode("latin-1")))
                    if private:
                        out.append((b"cache-control", b"private"))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, wrapped)


class OnStore:
    """The last rung's session (every rule above) on one of our stores, through the
    store's own contract: ``store.load(key)``, ``store.save(key, SessionWrite)``. What a
    store's rules cost shows against the raw floor; what the session's generality costs
    shows against ``ours``."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.verified: dict[bytes, tuple[str, str]] = {}

    async def seeded(self) -> bytes:
        texts = {k: SERIALIZER.dumps(v) for k, v in BASE_DATA.items()}
        saved = await self.store.create(write(texts, create=True))
        value = SIGNER.sign(saved.key)
        cookie = f"session={value}".encode()
        self.verified[cookie] = (value, saved.key)
        return cookie


class ContractStore(Store):
    """The least store that keeps the rules this request exercises, through the store
    contract (``SessionWrite`` in, ``WriteOutcome`` and ``Saved`` out, the key hashed by
    the base class): expiry checked, set keys merged into a new record, delete wins, the
    LRU bound. No owner index, expiry settings, merges, deletions or emptiness rule: what
    MemoryStore adds for the rest of the contract."""

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, StoredSession] = {}

    async def read(self, store_id: str) -> StoredSession | None:
        record = self.records.get(store_id)
        if record is not None and record.expires_at <= self.clock():
            return None
        return record

    async def write(self, store_id: str, change: SessionWrite) -> WriteOutcome:
        records = self.records
        current = records.get(store_id)
        if change.create:
            data, created_at = dict(change.set), change.now
        elif current is None or current.expires_at <= self.clock():
            raise SessionInterrupted()
        else:
            data, created_at = dict(current.data), current.created_at
            data.update(change.set)
            del records[store_id]
        ends = change.default_expires_at
        records[store_id] = StoredSession(data, ends, created_at, change.now)
        if len(records) > 10_000:
            del records[next(iter(records))]
        return WriteOutcome(True, ends, None)


def write(texts: dict[str, str], *, create: bool) -> Any:
    now = time.time()
    return SessionWrite(
        texts,
        _NOTHING,
        False,
        create,
        now,
        now + MAX_AGE,
        None,
        now,
        None,
        False,
        None,
        False,
        None,
        _NO_MERGES,
        None,
    )


class OnStoreSession(dict[str, Any]):
    __slots__ = ("changed", "cookie_value", "headers", "key", "loaded", "on")

    def __init__(self, on: OnStore, request_headers: Any) -> None:
        self.on, self.headers, self.key, self.loaded, self.changed = (
            on,
            request_headers,
            None,
            False,
            {},
        )

    def __await__(self) -> Any:
        return self.load().__await__()

    async def load(self) -> OnStoreSession:
        if self.loaded:
            return self
        for name, value in self.headers:
            if name == b"cookie":
                hit = self.on.verified.get(value)
                if hit is not None:
                    self.cookie_value, self.key = hit
        record = await self.on.store.load(self.key) if self.key else None
        if record is not None:
            loads = SERIALIZER.loads
            dict.update(self, {name: loads(text) for name, text in record.data.items()})
        self.loaded = True
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        self.changed[key] = SERIALIZER.dumps(value)
        dict.__setitem__(self, key, value)


class OnStoreMiddleware:
    def __init__(self, app: Any, on: OnStore) -> None:
        self.app, self.on = app, on

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        session = OnStoreSession(self.on, scope["headers"])
        scope.setdefault("state", {})["session"] = session

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start" and session.loaded:
                out = list(message.get("headers", ()))
                private = _vary_on_cookie(out)
                if session.changed and message["status"] < 500:
                    try:
                        change = write(session.changed, create=False)
                        saved = await self.on.store.save(session.key, change)
                    except SessionInterrupted:
                        await send({**message, "status": 400, "headers": []})
                        return
                    max_age = round(saved.expires_at - time.time())
                    value = session.cookie_value
                    cookie = f"session={value}; path=/; Max-Age={max_age}; httponly; samesite=lax"
                    out.append((b"set-cookie", cookie.encode("latin-1")))
                    if private:
                        out.append((b"cache-control", b"private"))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, wrapped)


async def on_store_app(store: Any) -> tuple[Any, bytes]:
    on = OnStore(store)
    app = session_app("ours", [Middleware(OnStoreMiddleware, on=on)], BASE_DATA)
    return app, await on.seeded()


def lean_app(rung: int) -> tuple[Any, bytes]:
    lean = Lean(rung)
    return session_app("ours", [Middleware(LeanMiddleware, lean=lean)], BASE_DATA), lean.cookie


async def interleaved(cells: dict[str, Any], endpoint: str, against: str, runs: int) -> None:
    """Three runs of 30 rounds, each cell in 4 slices of 30 requests taken in turn (the order
    rotated every round, as ``inprocess``); the median of per-round ratios to ``against``."""
    names = list(cells)
    for run in range(runs):
        per_round: dict[str, list[float]] = {k: [] for k in cells}
        for number in range(-1, 30):  # round -1 warms up
            got: dict[str, list[float]] = {k: [] for k in cells}
            order = names[number % len(names) :] + names[: number % len(names)]
            for _ in range(4):
                for name in order:
                    app, cookie = cells[name]
                    got[name] += (await timed(app, "/" + endpoint, cookie, 30))[0]
            for name in cells if number >= 0 else ():
                per_round[name].append(statistics.median(got[name]))
        floor = per_round[against]
        print(f"run {run + 1}, {endpoint}:")
        for name, values in per_round.items():
            ratio = statistics.median([x / y for x, y in zip(values, floor, strict=True)])
            print(f"  {name:14} {statistics.median(values):6.1f} us  {ratio:.2f}x {against}")


async def store_cells(kind: str, env: Env) -> tuple[dict[str, Any], list[Any], str]:
    """The raw floor, the lean session on our store, and ours, for one server store."""
    ours = await build(config(f"ours-{kind}"), env)
    store = _ours_store(kind, env, f"lean-{kind}")
    cells = {"on-store": await on_store_app(store), f"ours-{kind}": (ours.app, ours.cookie)}
    closers = [ours.aclose, store.aclose]
    if kind == "memory":
        cells = {"on-contract": await on_store_app(ContractStore())} | cells
        return {"bare": (floor_app(_noop, _noop), DUMMY_COOKIE)} | cells, closers, "bare"
    raw = await build(config(f"raw-{kind}"), env)
    return {f"raw-{kind}": (raw.app, raw.cookie)} | cells, [*closers, raw.aclose], f"raw-{kind}"


async def main() -> None:
    mode, args = sys.argv[1], sys.argv[2:]
    env = Env(os.environ.get("REDIS_URL", ""), tempfile.mkdtemp())
    if mode == "ir":  # a driver for cachegrind: CELL ENDPOINT N, after 200 warm-up
        cell, endpoint, n = args[0], args[1], int(args[2])
        closers: list[Any] = []
        if cell in RUNGS:
            app, cookie = lean_app(RUNGS.index(cell))
        elif cell == "on-contract":
            app, cookie = await on_store_app(ContractStore())
        elif cell.startswith("on-"):
            store = _ours_store(cell[3:], env, "lean")
            app, cookie = await on_store_app(store)
            closers.append(store.aclose)
        else:
            built = await build(config(cell), env)
            app, cookie, closers = built.app, built.cookie, [built.aclose]
        h, send = headers(cookie), NotOK()
        for _ in range(200 + n):
            await app(scope("/" + endpoint, h), receive, send)
        send.check(n, endpoint)
    elif mode == "time":  # the memory ladder: ENDPOINT...
        cells, closers, _ = await store_cells("memory", env)
        cells = {"bare": cells.pop("bare")} | {n: lean_app(i) for i, n in enumerate(RUNGS)} | cells
        for endpoint in args or ["write", "read"]:
            await interleaved(cells, endpoint, "bare", 3)
    else:  # "stores KIND ENDPOINT...": the floor, the lean session on our store, ours
        cells, closers, floor = await store_cells(args[0], env)
        for endpoint in args[1:] or ["write", "read"]:
            await interleaved(cells, endpoint, floor, 3)
    for closer in closers:
        await closer()


if __name__ == "__main__":
    asyncio.run(main())
