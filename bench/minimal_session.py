"""The least a lazily loaded server-side session can do, as a floor for issue 24's memory
and untouched goals: the same ``await request.state.session`` API through a pure ASGI
middleware, a dict of JSON texts in memory, the cookie parsed on load, ``Vary: Cookie`` on
a copy of the start message, a save and ``Set-Cookie`` on change. No signing, no expiry,
no per-key tracking or merge, no LRU bound. A decided experiment: results in RESULTS.md.

    python -m bench.minimal_session time          # interleaved with bare and ours-memory
    valgrind --tool=cachegrind --cache-sim=no python -m bench.minimal_session ir read 200
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from typing import Any

from starlette.middleware import Middleware

from bench.apps import BASE_DATA, DUMMY_COOKIE, Env, _noop, build, config, floor_app, session_app
from bench.asgi import NotOK, headers, receive, scope, timed

STORE = {"abc": json.dumps(BASE_DATA)}


class MinimalSession(dict[str, Any]):
    __slots__ = ("changed", "headers", "key", "loaded")

    def __init__(self, request_headers: Any) -> None:
        self.headers, self.key, self.loaded, self.changed = request_headers, None, False, False

    def __await__(self) -> Any:
        return self.load().__await__()

    async def load(self) -> MinimalSession:
        if not self.loaded:
            for name, value in self.headers:
                if name == b"cookie":
                    for part in value.split(b";"):
                        k, _, v = part.strip().partition(b"=")
                        if k == b"session":
                            self.key = v.decode()
            text = STORE.get(self.key) if self.key else None
            if text:
                dict.update(self, json.loads(text))
            self.loaded = True
        return self

    def __setitem__(self, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        self.changed = True


class MinimalMiddleware:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        session = MinimalSession(scope["headers"])
        scope.setdefault("state", {})["session"] = session

        async def wrapped(message: Any) -> None:
            if message["type"] == "http.response.start" and session.loaded:
                out = [*message.get("headers", ()), (b"vary", b"Cookie")]
                if session.changed:
                    STORE[session.key or "new"] = json.dumps(session)
                    cookie = f"session={session.key}; Path=/; Max-Age=1209600; HttpOnly"
                    out.append((b"set-cookie", cookie.encode()))
                message = {**message, "headers": out}
            await send(message)

        await self.app(scope, receive, wrapped)


def minimal_app() -> Any:
    return session_app("ours", [Middleware(MinimalMiddleware)], BASE_DATA)


async def main() -> None:
    if sys.argv[1] == "ir":  # a driver for cachegrind: ENDPOINT N, after 200 warm-up
        app, h, send = minimal_app(), headers(b"session=abc"), NotOK()
        for _ in range(200 + int(sys.argv[3])):
            await app(scope("/" + sys.argv[2], h), receive, send)
        return
    ours = await build(config("ours-memory"), Env("", tempfile.gettempdir()))
    cells = {"bare": (floor_app(_noop, _noop), DUMMY_COOKIE)}
    cells |= {"minimal": (minimal_app(), b"session=abc"), "ours-memory": (ours.app, ours.cookie)}
    for endpoint in ("untouched", "read", "write"):
        per_round: dict[str, list[float]] = {k: [] for k in cells}
        for number in range(-1, 30):  # 4 slices of 30 per cell and round, as inprocess
            got: dict[str, list[float]] = {k: [] for k in cells}
            for _ in range(4):
                for name, (app, cookie) in cells.items():
                    got[name] += (await timed(app, "/" + endpoint, cookie, 30))[0]
            for name in cells if number >= 0 else ():
                per_round[name].append(statistics.median(got[name]))
        bare = per_round["bare"]
        for name, values in per_round.items():
            ratio = statistics.median([x / y for x, y in zip(values, bare, strict=True)])
            print(f"{endpoint} {name}: {statistics.median(values):.1f} us, {ratio:.2f}x bare")


if __name__ == "__main__":
    asyncio.run(main())
