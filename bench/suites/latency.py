"""Request latency with the store a network hop away: Redis and PostgreSQL behind an added
round-trip delay (0, 1 and 2 ms, by a delay relay: :mod:`bench.netpath`), p50 and p99 per
request type for ours, starsessions (Redis) and the raw floors, and the round trips each
costs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..apps import Built, Env, build, config
from ..asgi import timed
from ..harness import Context, Section, log, sized, table
from ..netpath import HOW, RelayProcess, delayed
from ..pg import POSTGRES
from ..services import REDIS, ServiceSpec, Unavailable
from ..stats import percentile

TITLE = "Latency with the store a network hop away"
# Request types: (path, sends the seeded cookie). The floor's first write is /create.
TYPES = {
    "untouched": ("/untouched", True),
    "read": ("/read", True),
    "write": ("/write", True),
    "first write": ("/write", False),
}


@dataclass(frozen=True)
class Store:
    label: str
    spec: ServiceSpec
    sides: dict[str, str]  # column -> configuration; "ours" and "floor" always
    described: str


STORES = {
    "redis": Store(
        "Redis",
        REDIS,
        {"ours": "ours-redis", "starsessions": "starsessions-redis", "floor": "raw-redis"},
        "`ours-redis`, `starsessions-redis` (lazy `load_session`), `raw-redis` (redis-py GET "
        "/ GET+SET; first write: SET)",
    ),
    "postgres": Store(
        "PostgreSQL",
        POSTGRES,
        {"ours": "ours-postgres", "floor": "raw-postgres"},
        "`ours-postgres` (PostgresStore), `raw-postgres` (asyncpg on a pool set up as the "
        "store's: one SELECT by primary key / that SELECT + one upsert; first write: the "
        "upsert). starsessions has no PostgreSQL store",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delays", default="0,1,2", help="added round-trip ms (0,1,2)")
    sized(parser, requests=(600, 40, "requests per cell"))
    parser.add_argument(
        "--service", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}"
    )


def _path(kind: str, side: str) -> str:
    return "/create" if side == "floor" and kind == "first write" else TYPES[kind][0]


async def _build_all(store: Store, url: str, tmpdir: str) -> dict[str, Built]:
    urls = {"redis_url": url} if store.spec is REDIS else {"redis_url": "", "postgres_url": url}
    env = Env(tmpdir=tmpdir, **urls)
    return {side: await build(config(c), env) for side, c in store.sides.items()}


async def measure(
    store: Store, url: str, relay: RelayProcess, delays: list[float], n: int, tmp: str
) -> dict[str, Any]:
    """Per delay, side and type: every request's microseconds."""
    built = await _build_all(store, url, tmp)
    out: dict[str, Any] = {}
    rounds = 10 if n >= 100 else 2  # interleaved, so drift hits every cell alike
    try:
        for delay in delays:
            relay.set_delay(delay)
            cells: dict[str, dict[str, list[float]]] = {s: {t: [] for t in TYPES} for s in built}
            for number in range(-1, rounds):  # round -1 warms up
                for side, b in built.items():
                    for kind, (_, with_cookie) in TYPES.items():
                        cookie = b.cookie if with_cookie else None
                        times, _ = await timed(b.app, _path(kind, side), cookie, n // rounds)
                        cells[side][kind] += times if number >= 0 else []
            out[str(delay)] = cells
            log(f"  {store.label}: {delay} ms done")
        relay.set_delay(0)
    finally:
        for b in built.values():
            await b.aclose()
    return out


async def round_trips(store: Store, url: str, direct: str, relay: RelayProcess, tmp: str) -> Any:
    """Turns through the relay (no delay) per request, and the server's commands per request."""
    commands = store.spec.commands
    built = await _build_all(store, url, tmp)
    n, out = 5, {}
    try:
        for side, b in built.items():
            for kind, (_, with_cookie) in TYPES.items():
                path, cookie = _path(kind, side), b.cookie if with_cookie else None
                # Once uncounted: asyncpg prepares a statement on its first use, a turn of
                # its own that a long-running app paid long ago.
                await timed(b.app, path, cookie, 1)
                before_turns = relay.turns()
                before = commands(direct) if commands else Counter()
                await timed(b.app, path, cookie, n)
                after = commands(direct) if commands else Counter()
                ran = {k: (v - before[k]) / n for k, v in after.items() if v > before[k]}
                for ours in ("info", "hello"):  # this function's own connection, not the app's
                    ran.pop(ours, None)
                turns = (relay.turns() - before_turns) / n
                out.setdefault(side, {})[kind] = {"round_trips": turns, "commands": ran}
    finally:
        for b in built.values():
            await b.aclose()
    return out


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) / 1000:.2f}"


def delay_table(store: Store, cells: dict[str, Any], trips: dict[str, Any], delay: float) -> Any:
    sides = list(store.sides)
    head = ["request", *(f"{s} p50 / p99 ms:" for s in sides)]
    head += [f"round trips {' / '.join(sides)}:", "goal at this delay"]
    rows = []
    for kind in TYPES:
        row = [kind, *(f"{_ms(cells[s][kind], 50)} / {_ms(cells[s][kind], 99)}" for s in sides)]
        row.append(" / ".join(f"{trips[s][kind]['round_trips']:g}" for s in sides))
        rows.append([*row, verdict(cells, trips, kind, delay)])
    return table(head, rows)


def verdict(cells: dict[str, Any], trips: dict[str, Any], kind: str, delay: float) -> str:
    """Issue 16: our p50 costs the floor's round trips (within one added delay of its p50),
    and a read beats starsessions' p50 by at least one round trip (where it has a store)."""
    if delay <= 0:
        return "-"
    p50 = {side: percentile(by_kind[kind], 50) / 1000 for side, by_kind in cells.items()}
    ours, floor = trips["ours"][kind]["round_trips"], trips["floor"][kind]["round_trips"]
    same = ours <= floor and p50["ours"] - p50["floor"] < delay
    text = f"{'PASS' if same else '**MISS**'} floor's round trips"
    if kind == "read" and "starsessions" in p50:
        ahead = p50["starsessions"] - p50["ours"] >= delay
        text += f"; {'PASS' if ahead else '**MISS**'} ≥ 1 round trip ahead of starsessions"
    return text


def summary(cells: dict[str, Any]) -> dict[str, Any]:
    """Per delay, side and type: n, p50, p90, p99 and max in microseconds."""
    return {
        delay: {
            side: {
                kind: {"n": len(v), "max": round(max(v), 1)}
                | {f"p{q}": round(percentile(v, q), 1) for q in (50, 90, 99)}
                for kind, v in by_kind.items()
            }
            for side, by_kind in by_side.items()
        }
        for delay, by_side in cells.items()
    }


def one_store(
    store: Store, delays: list[float], n: int, tmp: str
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The report's lines for ``store``, the README's (at +1 ms), and the data."""
    with delayed(store.spec) as (server, relay):
        url = store.spec.url("127.0.0.1", relay.port)
        trips = asyncio.run(round_trips(store, url, server.url, relay, tmp))
        cells = asyncio.run(measure(store, url, relay, delays, n, tmp))
    head = ["", f"### {store.label}", "", f"{store.described}. Added delay: {HOW}."]
    lines, readme = list(head), list(head)
    for delay in delays:
        floor = cells[str(delay)]["floor"]
        measured = (percentile(floor["read"], 50) - percentile(floor["untouched"], 50)) / 1000
        part = [
            "",
            f"#### +{delay:g} ms per round trip",
            "",
            *delay_table(store, cells[str(delay)], trips, delay),
            "",
            f"One round trip through this path, measured (floor read p50 - floor "
            f"untouched p50): {measured:.2f} ms.",
        ]
        lines += part
        readme += part if delay == 1 else []
    if store.spec.commands:

        def ran(side: str, kind: str) -> str:
            counts = sorted(trips[side][kind]["commands"].items())
            return ", ".join(f"{v:g} {k}" for k, v in counts) or "-"

        rows = [[kind, *(ran(side, kind) for side in store.sides)] for kind in TYPES]
        lines += ["", f"#### {store.label} commands per request", ""]
        lines += table(["request", *store.sides], rows)
    return lines, readme, {"round_trips": trips, "latency_us": summary(cells)}


def run(ctx: Context, args: argparse.Namespace) -> Section:
    if not ctx.services.allowed:
        raise Unavailable("services are off (--services none), so no store to put a delay before")
    names = args.service.split(",")
    if unknown := set(names) - set(STORES):
        raise SystemExit(f"--service: no store {', '.join(sorted(unknown))}; known: {list(STORES)}")
    delays = [float(d) for d in args.delays.split(",")]
    n = args.requests
    intro = (
        f"Each cell: {n} sequential requests in interleaved rounds, timed in-process (ASGI "
        "called directly; the store's round trips cross the delayed path). Round trips: "
        "client->server turns per request, counted by the relay with no delay; Redis commands: "
        "the server's `INFO commandstats`."
    )
    lines, readme = [intro], [intro]
    data: dict[str, Any] = {"requests": n, "stores": {}, "skipped": {}}
    for name in names:
        store = STORES[name]
        try:
            part, readme_part, data["stores"][name] = one_store(store, delays, n, str(ctx.tmpdir))
        except Unavailable as exc:
            data["skipped"][name] = str(exc)
            part = readme_part = ["", f"### {store.label}", "", f"Skipped: {exc}."]
        lines += part
        readme += readme_part
    if not data["stores"]:
        raise Unavailable("; ".join(data["skipped"].values()))
    return Section(TITLE, lines, data, readme=readme)
