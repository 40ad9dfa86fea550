"""Where an ours-memory request's instructions go: one part at a time replaced by a no-op
stand-in, the request's instructions counted again (run under cachegrind, as the
instructions suite does). A decided experiment: results in RESULTS.md.

    valgrind --tool=cachegrind --cache-sim=no python -m bench.ablate /read vary 200
    (and 600; (Ir(600) - Ir(200)) / 400 per request; PARTS joined with "+")

PARTS: none, vary (Vary: Cookie on the copied start message), decode (eager decoding),
cookie (cookie header to key: the verified-cookie cache), storeload (MemoryStore load),
setcookie (the Set-Cookie header), storesave (MemoryStore save: merge, LRU, new record),
encode (encoding at assignment).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asgi_sessions.middleware as mw
import asgi_sessions.session as ss
from asgi_sessions.stores.base import Saved
from bench.apps import Env, build, config
from bench.asgi import NotOK, headers, receive, scope


async def main(path: str, ablate: str, n: int) -> None:
    built = await build(config("ours-memory"), Env("", "/tmp"))
    app: Any = built.app
    app.middleware_stack = layer = app.build_middleware_stack()
    while not isinstance(layer, mw.SessionMiddleware):
        layer = layer.app
    settings, request_headers = layer.config, headers(built.cookie)
    store = settings.store
    session = ss.Session(settings, request_headers, None)
    await session.load()
    key, value, record = session._key, session._cookie_value, await store.load(session._key)
    for part in ablate.split("+"):
        if part == "vary":
            mw._with_vary = lambda message: message  # type: ignore[assignment]
            mw._vary_on_cookie = lambda headers: False  # type: ignore[assignment]
        elif part == "decode":
            raw = type("Raw", (), {"loads": staticmethod(lambda text: text)})()
            raw.dumps = settings.serializer.dumps
            object.__setattr__(settings, "serializer", raw)
        elif part == "cookie":

            def client_key(self: Any) -> Any:
                self._cookie_value, self._stale_cookie, self._cookie_key = value, False, key
                return key

            ss.Session._client_key = client_key  # type: ignore[method-assign]
        elif part == "storeload":

            async def load(k: str) -> Any:
                return record

            store.load = load  # type: ignore[method-assign]
        elif part == "setcookie":
            ss.Session._set_cookie = lambda self: "session=x; Path=/"  # type: ignore[method-assign]
        elif part == "storesave":

            async def save(k: str, change: Any) -> Saved:
                return Saved(k, True, change.default_expires_at, None)

            store.save = save  # type: ignore[method-assign]
        elif part == "encode":
            ss.Session._encode = lambda self, key, value: '"x"'  # type: ignore[method-assign]
    send = NotOK()
    for _ in range(200 + n):
        await app(scope(path, request_headers), receive, send)
    send.check(200 + n, path)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
