"""SQLite under 2 uvicorn workers: two uvicorn processes on one SQLite file, loaded by 64
keep-alive connections (32 to each, one request in flight per connection, as a balancer
in front of ``--workers 2`` would spread them); requests/s, p99 and "database is locked",
ours against raw aiosqlite doing the floor's work (``raw-sqlite``, whose write stores a
changed value each time, as a session's write does) in the same processes. Every
configuration's servers start up front; cells interleave round by round.
"""

from __future__ import annotations

import argparse
from collections import Counter

from ..harness import Context, Section, sized, table
from ..served import load_configs
from ..stats import Case, Goal, fmt, ratio_rows, ratio_table

TITLE = "SQLite under 2 uvicorn workers x 64 clients: requests/s, p99 [p10-p90 of rounds]"
CONFIGS, ENDPOINTS, WORKERS = ["raw-sqlite", "ours-sqlite"], ("read", "write"), 2
CASES = [
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite", (Goal(0.85),)),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite", (Goal(0.85),)),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, seconds=(3.0, 0.5, "seconds per cell per round"), rounds=(3, 1, "rounds"))
    parser.add_argument("--clients", type=int, default=64, help="connections in all (64)")


def run(ctx: Context, args: argparse.Namespace) -> Section:
    size = {"seconds": args.seconds, "rounds": args.rounds, "clients": args.clients}
    cells, loads = load_configs(CONFIGS, ENDPOINTS, ctx.tmpdir, workers=WORKERS, **size)
    rps: dict[str, dict[str, list[float]]] = {n: {} for n in CONFIGS}
    p99: dict[str, dict[str, list[float]]] = {n: {} for n in CONFIGS}
    errors, locked, samples = Counter[str](), Counter[str](), []
    for name, by_endpoint in cells.items():
        for endpoint, loaded in by_endpoint.items():
            rps[name][endpoint] = [c.per_second for c in loaded]
            p99[name][endpoint] = [c.p99_ms for c in loaded]
            for c in loaded:
                errors[name] += c.errors
                locked[name] += c.locked
                samples += [f"{name} /{endpoint}: {sample}" for sample in c.samples]
    rows = []
    for n in CONFIGS:
        rows.append([f"`{n}`", fmt(rps[n]["read"], digits=0), fmt(p99[n]["read"])])
        rows[-1] += [fmt(rps[n]["write"], digits=0), fmt(p99[n]["write"]), errors[n], locked[n]]
    head = ["configuration", "read req/s:", "read p99 ms:", "write req/s:", "write p99 ms:"]
    lines = [
        f"{WORKERS} uvicorn processes (httptools) on one SQLite file per configuration; "
        f"{args.clients} keep-alive connections, {args.clients // WORKERS} to each, one request "
        f"in flight each; {args.rounds} rounds x {args.seconds:g} s per cell, configurations "
        "interleaved. Every connection shares one session (ours) or one row (the floors). "
        f"1-minute load average at each round: {', '.join(f'{v:.1f}' for v in loads)}.",
        "",
        *table([*head, "errors:", '"database is locked":'], rows),
        "",
        "Throughput ratios (ours / floor; higher is better). Goal: ≥ 0.85x the floor's "
        'requests/s and 0 "database is locked".',
        "",
        *ratio_table(ratios := ratio_rows(rps, CASES, higher_is_better=True)),
    ]
    lines += ["", "Errors seen: " + "; ".join(samples[:5])] if samples else []
    data = {"workers": WORKERS, **size, "load_average": loads, "rps": rps, "p99_ms": p99}
    return Section(TITLE, lines, data | {"errors": errors, "locked": locked, "ratios": ratios})
