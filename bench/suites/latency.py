"""Request latency with the store a network hop away: Redis behind an added round-trip
delay (0, 1 and 2 ms; kernel netem where it exists, else a delay relay), p50 and p99 per
request type for ours, starsessions and the raw floors, and the round trips each costs.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from ..apps import Built, Env, build, config
from ..asgi import timed
from ..harness import Context, Section, log
from ..netpath import DelayedService, delayed
from ..services import SERVICES
from ..stats import percentile

TITLE = "Latency with the store a network hop away"
CONFIGS = {"ours": "ours-redis", "starsessions": "starsessions-redis", "floor": "raw-redis"}
# Request types: (path, sends the seeded cookie). The floor's first write is /create: SET only.
TYPES = {
    "untouched": ("/untouched", True),
    "read": ("/read", True),
    "write": ("/write", True),
    "first write": ("/write", False),
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
    parser.add_argument("--service", choices=sorted(SERVICES), default="redis")


def _path(kind: str, name: str) -> str:
    path, _ = TYPES[kind]
    return "/create" if name == "floor" and kind == "first write" else path


async def _build_all(url: str, tmpdir: str) -> dict[str, Built]:
    env = Env(redis_url=url, tmpdir=tmpdir)
    return {name: await build(config(c), env) for name, c in CONFIGS.items()}


async def measure(service: DelayedService, delays: list[float], n: int, tmp: str) -> dict[str, Any]:
    """Per delay, configuration and type: every request's microseconds."""
    built = await _build_all(service.url, tmp)
    out: dict[str, Any] = {}
    rounds = 10 if n >= 100 else 2  # interleaved, so drift hits every cell alike
    try:
        for delay in delays:
            service.set_delay(delay)
            cells: dict[str, dict[str, list[float]]] = {c: {t: [] for t in TYPES} for c in built}
            for number in range(-1, rounds):  # round -1 warms up
                for name, b in built.items():
                    for kind, (_, with_cookie) in TYPES.items():
                        cookie = b.cookie if with_cookie else None
                        times = await timed(b.app, _path(kind, name), cookie, n // rounds)
                        if number >= 0:
                            cells[name][kind] += times
            out[str(delay)] = cells
            log(f"  {delay} ms done")
        service.set_delay(0)
    finally:
        for b in built.values():
            await b.aclose()
    return out


async def round_trips(service: DelayedService, commands: Any, tmp: str) -> dict[str, Any]:
    """Turns through the counting relay per request, and the server's commands per request."""
    built = await _build_all(service.counting_url, tmp)
    n = 5
    out: dict[str, Any] = {}
    try:
        for name, b in built.items():
            for kind, (_, with_cookie) in TYPES.items():
                path, cookie = _path(kind, name), b.cookie if with_cookie else None
                before_turns = service.relay.turns()
                before = commands(service.direct_url) if commands else Counter()
                await timed(b.app, path, cookie, n)
                after = commands(service.direct_url) if commands else Counter()
                ran = {k: (v - before[k]) / n for k, v in after.items() if v > before[k]}
                for ours in ("info", "hello"):  # this function's own connection, not the app's
                    ran.pop(ours, None)
                turns = (service.relay.turns() - before_turns) / n
                out.setdefault(name, {})[kind] = {"round_trips": turns, "commands": ran}
    finally:
        for b in built.values():
            await b.aclose()
    return out


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) / 1000:.2f}"


def table(cells: dict[str, Any], trips: dict[str, Any], delay: float) -> list[str]:
    lines = [
        "| request | ours p50 / p99 ms | starsessions p50 / p99 ms | floor p50 / p99 ms "
        "| round trips ours / starsessions / floor | goal at this delay |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for kind in TYPES:
        row = [f"{_ms(cells[n][kind], 50)} / {_ms(cells[n][kind], 99)}" for n in CONFIGS]
        rt = " / ".join(f"{trips[n][kind]['round_trips']:g}" for n in CONFIGS)
        lines.append(
            f"| {kind} | " + " | ".join(row) + f" | {rt} | {verdict(cells, trips, kind, delay)} |"
        )
    return lines


def verdict(cells: dict[str, Any], trips: dict[str, Any], kind: str, delay: float) -> str:
    """Issue 16: our p50 costs the floor's round trips (within one added delay of its p50),
    and a read beats starsessions' p50 by at least one round trip."""
    if delay <= 0:
        return "-"
    p50 = {n: percentile(cells[n][kind], 50) / 1000 for n in CONFIGS}
    ours, floor = trips["ours"][kind]["round_trips"], trips["floor"][kind]["round_trips"]
    same = ours <= floor and p50["ours"] - p50["floor"] < delay
    text = f"{'PASS' if same else '**MISS**'} floor's round trips"
    if kind == "read":
        ahead = p50["starsessions"] - p50["ours"] >= delay
        text += f"; {'PASS' if ahead else '**MISS**'} ≥ 1 round trip ahead of starsessions"
    return text


def summary(cells: dict[str, Any]) -> dict[str, Any]:
    """Per delay, configuration and type: n, p50, p90, p99 and max in microseconds."""
    return {
        delay: {
            name: {
                kind: {
                    "n": len(v),
                    **{f"p{q}": round(percentile(v, q), 1) for q in (50, 90, 99)},
                    "max": round(max(v), 1),
                }
                for kind, v in by_kind.items()
            }
            for name, by_kind in by_name.items()
        }
        for delay, by_name in cells.items()
    }


def commands_table(trips: dict[str, Any]) -> list[str]:
    lines = ["| request | ours | starsessions | floor |", "|---|---|---|---|"]
    for kind in TYPES:
        row = [
            ", ".join(f"{v:g} {k}" for k, v in sorted(trips[n][kind]["commands"].items())) or "-"
            for n in CONFIGS
        ]
        lines.append(f"| {kind} | " + " | ".join(row) + " |")
    return lines


def run(ctx: Context, args: argparse.Namespace) -> Section:
    spec = SERVICES[args.service]
    delays = [float(d) for d in args.delays.split(",")]
    n = args.requests or (40 if ctx.quick else 600)
    tmp = str(ctx.tmpdir)
    with delayed(spec, args.path) as service:
        log(f"  {service.kind}: {service.how}")
        trips = asyncio.run(round_trips(service, spec.commands, tmp))
        cells = asyncio.run(measure(service, delays, n, tmp))
    lines = [
        f"Added round-trip delay: {service.how}. Each cell: {n} sequential requests in "
        "interleaved rounds, timed in-process (ASGI called directly; the store's round trips "
        "cross the delayed path). Round trips: client->server turns counted by a relay with "
        f"no delay; commands: the server's `INFO commandstats`, per request. `{CONFIGS['ours']}`,"
        f" `{CONFIGS['starsessions']}` (lazy `load_session`), `{CONFIGS['floor']}` (redis-py "
        "GET / GET+SET; first write: SET).",
    ]
    readme: list[str] = []
    for delay in delays:
        floor = cells[str(delay)]["floor"]
        measured = (percentile(floor["read"], 50) - percentile(floor["untouched"], 50)) / 1000
        part = [
            "",
            f"### +{delay:g} ms per round trip",
            "",
            *table(cells[str(delay)], trips, delay),
            "",
            f"One round trip through this path, measured (floor read p50 - floor "
            f"untouched p50): {measured:.2f} ms.",
        ]
        lines += part
        if delay == 1:
            readme = [lines[0], *part]
    lines += ["", "### Commands per request", "", *commands_table(trips)]
    data = {
        "path": service.kind,
        "how": service.how,
        "requests": n,
        "round_trips": trips,
        "latency_us": summary(cells),
    }
    return Section(TITLE, lines, data, readme=readme)
