"""Kill the Redis master under a running app and watch its requests: the failover window.

One in-process app (the same app object throughout, never restarted) and one writer per
session, each sending ``/write?n=1, 2, 3...`` every 20 ms. Meanwhile a thread kills the
master (SIGKILL) and waits until the topology has promoted its replica. Every answer is
recorded; afterwards each session must hold at least the last ``n`` it acknowledged.
Used by ``tests/test_redis_failover.py`` and ``python -m bench cluster``.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from asgi_sessions import SessionMiddleware, Store

SECRET = "failover-secret-key-that-is-long-enough-0"
PAUSE = 0.02


def failover_app(store: Store) -> Starlette:
    async def write(request: Request) -> JSONResponse:
        session = await request.state.session
        session["n"] = int(request.query_params["n"])
        return JSONResponse({"n": session["n"]})

    async def read(request: Request) -> JSONResponse:
        return JSONResponse(dict(await request.state.session))

    return Starlette(
        routes=[Route("/write", write, methods=["POST"]), Route("/read", read)],
        middleware=[Middleware(SessionMiddleware, secret_key=SECRET, store=store)],
    )


@dataclass(frozen=True)
class Attempt:
    """One request: seconds after the kill (negative before it), and what came back."""

    at: float
    victim: bool
    status: int
    set_cookie: bool


@dataclass
class FailoverRun:
    promoted_after: float = 0.0
    """Seconds from the kill until the topology had promoted the replica."""
    attempts: list[Attempt] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    """Sessions whose stored ``n`` is below the last one a 200 acknowledged."""
    crashes: list[str] = field(default_factory=list)
    """Exceptions that escaped the app (a 500): anything but the store's own errors."""

    def failed(self, *, victim: bool) -> list[Attempt]:
        return [a for a in self.attempts if a.victim is victim and a.status != 200]

    def window(self) -> float:
        """Seconds from the first failed request on the dead master's sessions to the
        first success after the last failure (0 if nothing failed)."""
        failures = self.failed(victim=True)
        if not failures:
            return 0.0
        last = max(a.at for a in failures)
        recovered = [a.at for a in self.attempts if a.victim and a.status == 200 and a.at > last]
        end = min(recovered) if recovered else last
        return end - min(a.at for a in failures)


async def run_failover(
    app: Starlette,
    *,
    victim_of: Callable[[str], bool],
    kill_and_wait: Callable[[], float],
    victims: int = 4,
    bystanders: int = 4,
    after: int = 5,
    deadline: float = 40.0,
) -> FailoverRun:
    """Drive ``app`` through a failover.

    Args:
        victim_of: whether a session key lives on the master that will be killed.
        kill_and_wait: kills that master and returns once the replica took over (run in
            a thread); returns the seconds that took.
        victims / bystanders: sessions on the killed master / elsewhere (a cluster's
            other masters; with Sentinel every session is a victim).
        after: successes each victim must see after the promotion before the run ends.
    """
    run = FailoverRun()

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await app(scope, receive, send)
        except Exception as exc:
            run.crashes.append("".join(traceback.format_exception(exc)[-4:]))
            raise

    transport = httpx.ASGITransport(app=recording, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        cookies = await _sessions(http, victim_of, victims, bystanders)
        http.cookies.clear()  # from here on every request names its session itself
        killed_at = time.monotonic() + 0.3  # a short baseline before the kill
        promoted = asyncio.Event()

        async def kill() -> None:
            await asyncio.sleep(max(0.0, killed_at - time.monotonic()))
            run.promoted_after = await asyncio.to_thread(kill_and_wait)
            promoted.set()

        async def writer(cookie: str, victim: bool) -> tuple[str, int]:
            acknowledged = n = 0
            successes_after = 0
            stop = time.monotonic() + deadline
            while time.monotonic() < stop and successes_after < after:
                n += 1
                started = time.monotonic() - killed_at
                response = await http.post(
                    "/write", params={"n": n}, headers={"cookie": f"session={cookie}"}
                )
                run.attempts.append(
                    Attempt(started, victim, response.status_code, "set-cookie" in response.headers)
                )
                if response.status_code == 200:
                    acknowledged = n
                    if promoted.is_set():
                        successes_after += 1
                await asyncio.sleep(PAUSE)
            return cookie, acknowledged

        killer = asyncio.create_task(kill())
        results = await asyncio.gather(
            *(writer(cookie, victim) for cookie, victim in cookies.items())
        )
        await killer
        for cookie, acknowledged in results:
            stored = (await http.get("/read", headers={"cookie": f"session={cookie}"})).json()
            if stored.get("n", 0) < acknowledged:
                run.lost.append(f"acknowledged n={acknowledged}, stored {stored!r}")
    return run


async def _sessions(
    http: httpx.AsyncClient, victim_of: Callable[[str], bool], victims: int, bystanders: int
) -> dict[str, bool]:
    """Create sessions until there are enough on the doomed master and elsewhere."""
    cookies: dict[str, bool] = {}
    wanted = {True: victims, False: bystanders}
    for _ in range(100 * (victims + bystanders)):
        if not any(wanted.values()):
            return cookies
        http.cookies.clear()  # each creation starts a new session
        response = await http.post("/write", params={"n": 0})
        response.raise_for_status()
        cookie = response.cookies["session"]
        victim = victim_of(cookie.split(".")[0])
        if wanted[victim]:
            wanted[victim] -= 1
            cookies[cookie] = victim
    raise RuntimeError(f"could not place sessions as asked: {wanted} still wanted")
