"""Request latency with the store a network hop away: Redis and PostgreSQL behind an added
round-trip delay (0, 1 and 2 ms; kernel netem where it exists, else a delay relay), p50 and
p99 per request type for ours, starsessions (Redis) and the raw floors, and the round trips
each costs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ..apps import Built, Env, build, config
from ..asgi import timed
from ..harness import Context, Section, log
from ..netpath import DelayedService, delayed
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
    parser.add_argument("--requests", type=int, help="requests per cell (default 600; quick 40)")
    parser.add_argument(
        "--path",
        choices=("auto", "netem", "relay"),
        default="auto",
        help="how to add the delay: netem if it works (auto), or force one",
    )
    parser.add_argument(
        "--service", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}"
    )


def _path(kind: str, side: str) -> str:
    path, _ = TYPES[kind]
    return "/create" if side == "floor" and kind == "first write" else path


async def _build_all(store: Store, url: str, tmpdir: str) -> dict[str, Built]:
    urls = {"redis_url": url} if store.spec is REDIS else {"redis_url": "", "postgres_url": url}
    env = Env(tmpdir=tmpdir, **urls)
    return {side: await build(config(c), env) for side, c in store.sides.items()}


async def measure(
    store: Store, service: DelayedService, delays: list[float], n: int, tmp: str
) -> dict[str, Any]:
    """Per delay, side and type: every request's microseconds."""
    built = await _build_all(store, service.url, tmp)
    out: dict[str, Any] = {}
    rounds = 10 if n >= 100 else 2  # interleaved, so drift hits every cell alike
    try:
        for delay in delays:
            service.set_delay(delay)
            cells: dict[str, dict[str, list[float]]] = {s: {t: [] for t in TYPES} for s in built}
            for number in range(-1, rounds):  # round -1 warms up
                for side, b in built.items():
                    for kind, (_, with_cookie) in TYPES.items():
                        cookie = b.cookie if with_cookie else None
                        times = await timed(b.app, _path(kind, side), cookie, n // rounds)
                        if number >= 0:
                            cells[side][kind] += times
            out[str(delay)] = cells
            log(f"  {store.label}: {delay} ms done")
        service.set_delay(0)
    finally:
        for b in built.values():
            await b.aclose()
    return out


async def round_trips(store: Store, service: DelayedService, tmp: str) -> dict[str, Any]:
    """Turns through the counting relay per request, and the server's commands per request."""
    commands = store.spec.commands
    built = await _build_all(store, service.counting_url, tmp)
    n = 5
    out: dict[str, Any] = {}
    try:
        for side, b in built.items():
            for kind, (_, with_cookie) in TYPES.items():
                path, cookie = _path(kind, side), b.cookie if with_cookie else None
                # Once uncounted: asyncpg prepares a statement on its first use, a turn of
                # its own that a long-running app paid long ago.
                await timed(b.app, path, cookie, 1)
                before_turns = service.relay.turns()
                before = commands(service.direct_url) if commands else Counter()
                await timed(b.app, path, cookie, n)
                after = commands(service.direct_url) if commands else Counter()
                ran = {k: (v - before[k]) / n for k, v in after.items() if v > before[k]}
                for ours in ("info", "hello"):  # this function's own connection, not the app's
                    ran.pop(ours, None)
                turns = (service.relay.turns() - before_turns) / n
                out.setdefault(side, {})[kind] = {"round_trips": turns, "commands": ran}
    finally:
        for b in built.values():
            await b.aclose()
    return out


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) / 1000:.2f}"


def table(store: Store, cells: dict[str, Any], trips: dict[str, Any], delay: float) -> list[str]:
    sides = list(store.sides)
    lines = [
        "| request | "
        + " | ".join(f"{s} p50 / p99 ms" for s in sides)
        + f" | round trips {' / '.join(sides)} | goal at this delay |",
        "|---|" + "---:|" * (len(sides) + 1) + "---|",
    ]
    for kind in TYPES:
        row = [f"{_ms(cells[s][kind], 50)} / {_ms(cells[s][kind], 99)}" for s in sides]
        rt = " / ".join(f"{trips[s][kind]['round_trips']:g}" for s in sides)
        lines.append(
            f"| {kind} | " + " | ".join(row) + f" | {rt} | {verdict(cells, trips, kind, delay)} |"
        )
    return lines


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
                kind: {
                    "n": len(v),
                    **{f"p{q}": round(percentile(v, q), 1) for q in (50, 90, 99)},
                    "max": round(max(v), 1),
                }
                for kind, v in by_kind.items()
            }
            for side, by_kind in by_side.items()
        }
        for delay, by_side in cells.items()
    }


def commands_table(store: Store, trips: dict[str, Any]) -> list[str]:
    lines = [f"| request | {' | '.join(store.sides)} |", "|---|" + "---|" * len(store.sides)]
    for kind in TYPES:
        row = [
            ", ".join(f"{v:g} {k}" for k, v in sorted(trips[s][kind]["commands"].items())) or "-"
            for s in store.sides
        ]
        lines.append(f"| {kind} | " + " | ".join(row) + " |")
    return lines


def one_store(
    store: Store, delays: list[float], n: int, tmp: str, path: str
) -> tuple[list[str], list[str], dict[str, Any]]:
    """The report's lines for ``store``, the README's (at +1 ms), and the data."""
    with delayed(store.spec, path) as service:
        log(f"  {store.label}, {service.kind}: {service.how}")
        trips = asyncio.run(round_trips(store, service, tmp))
        cells = asyncio.run(measure(store, service, delays, n, tmp))
    head = ["", f"### {store.label}", "", f"{store.described}. Added delay: {service.how}."]
    lines, readme = list(head), list(head)
    for delay in delays:
        floor = cells[str(delay)]["floor"]
        measured = (percentile(floor["read"], 50) - percentile(floor["untouched"], 50)) / 1000
        part = [
            "",
            f"#### +{delay:g} ms per round trip",
            "",
            *table(store, cells[str(delay)], trips, delay),
            "",
            f"One round trip through this path, measured (floor read p50 - floor "
            f"untouched p50): {measured:.2f} ms.",
        ]
        lines += part
        if delay == 1:
            readme += part
    if store.spec.commands:
        lines += ["", f"#### {store.label} commands per request", "", *commands_table(store, trips)]
    data = {"path": service.kind, "how": service.how, "round_trips": trips}
    return lines, readme, {**data, "latency_us": summary(cells)}


def run(ctx: Context, args: argparse.Namespace) -> Section:
    if not ctx.services.allowed:
        raise Unavailable("services are off (--services none), so no store to put a delay before")
    names = args.service.split(",")
    unknown = set(names) - set(STORES)
    if unknown:
        raise SystemExit(f"--service: no store {', '.join(sorted(unknown))}; known: {list(STORES)}")
    delays = [float(d) for d in args.delays.split(",")]
    n = args.requests or (40 if ctx.quick else 600)
    intro = (
        f"Each cell: {n} sequential requests in interleaved rounds, timed in-process (ASGI "
        "called directly; the store's round trips cross the delayed path). Round trips: "
        "client->server turns per request, counted by a relay with no delay; Redis commands: "
        "the server's `INFO commandstats`."
    )
    lines, readme = [intro], [intro]
    data: dict[str, Any] = {"requests": n, "stores": {}, "skipped": {}}
    for name in names:
        store = STORES[name]
        try:
            part, readme_part, data["stores"][name] = one_store(
                store, delays, n, str(ctx.tmpdir), args.path
            )
        except Unavailable as exc:
            data["skipped"][name] = str(exc)
            part = readme_part = ["", f"### {store.label}", "", f"Skipped: {exc}."]
        lines += part
        readme += readme_part
    if not data["stores"]:
        raise Unavailable("; ".join(data["skipped"].values()))
    return Section(TITLE, lines, data, readme=readme)
