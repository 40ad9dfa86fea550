"""Every configuration called in-process through ASGI, interleaved round by round: median
microseconds per request, wall and CPU, ratios against the floors on both (with the goals,
each judged on the steadier basis and over several runs in a row), the store server's own
time per request (:mod:`bench.meters`), each round's load and order, a write-size sweep,
and the ratio chart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ..apps import (
    CONFIGS,
    ENDPOINTS,
    POSTGRES_CONFIGS,
    SWEEP,
    SWEEP_SIZES,
    Built,
    Config,
    Env,
    Skip,
    build,
)
from ..asgi import call
from ..harness import Context, Section, log
from ..meters import STATEMENTS, Meter, PostgresMeter, RedisMeter, cpu_clock_cost, timed_both
from ..services import REDIS, Unavailable
from ..stats import BASES, Case, Goal, fmt, judged_rows

TITLE = (
    "In-process (ASGI called directly), median us per request, wall and CPU "
    "[p10-p90 of round medians]"
)

# Issue 24's cases (issue 16's, untouched raised to 1.10x): ours against the floor, the
# peers beside it.
CASES = [
    Case(
        "untouched, memory",
        "untouched",
        "bare",
        "ours-memory",
        (Goal(1.10),),
        (
            "ours-memory-autoload",
            "starlette",
            "starsessions-memory",
            "starsessions-memory-autoload",
        ),
    ),
    Case("untouched, SQLite", "untouched", "bare", "ours-sqlite", (Goal(1.10),)),
    Case(
        "untouched, Redis",
        "untouched",
        "bare",
        "ours-redis",
        (Goal(1.10),),
        ("starsessions-redis",),
    ),
    Case("untouched, cookie", "untouched", "bare", "ours-cookie", (Goal(1.10),)),
    Case(
        "memory read",
        "read",
        "bare",
        "ours-memory",
        (Goal(1.8),),
        ("ours-memory-autoload", "starsessions-memory", "starsessions-memory-autoload"),
    ),
    Case("memory write", "write", "bare", "ours-memory", (Goal(2.5),), ("starsessions-memory",)),
    Case("cookie read", "read", "bare", "ours-cookie", (Goal(0.8, "starlette"),), ("starlette",)),
    Case("cookie write", "write", "bare", "ours-cookie", (Goal(1.0, "starlette"),), ("starlette",)),
    Case(
        "Redis read",
        "read",
        "raw-redis",
        "ours-redis",
        (Goal(1.15),),
        ("starsessions-redis", "starsessions-redis-autoload"),
    ),
    Case(
        "Redis write",
        "write",
        "raw-redis",
        "ours-redis",
        (Goal(1.15), Goal(1.0, "starsessions-redis")),
        ("starsessions-redis",),
    ),
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite", (Goal(1.2),)),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite", (Goal(1.3),)),
]
SWEEP_CASES = [
    Case(f"{family} write, 100 KB / 1 KB", "write", f"{family}-1k", f"{family}-100k", goals)
    for family, goals in (
        ("ours-sqlite", (Goal(1.5),)),
        ("ours-redis", (Goal(1.5),)),
        ("starsessions-redis", ()),
    )
]

POSTGRES_CASES = [
    Case("PostgreSQL read", "read", "raw-postgres", "ours-postgres"),
    Case("PostgreSQL write", "write", "raw-postgres", "ours-postgres"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 25; quick 4)")
    parser.add_argument("--per-round", type=int, help="requests per cell per round (120; 30)")
    parser.add_argument(
        "--runs",
        type=int,
        help="the whole measurement this many times in a row; a goal is met only where "
        "every run meets it (default 3; quick 1)",
    )
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--no-sweep", action="store_true", help="skip the write-size sweep")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="add ours-postgres and the raw asyncpg floor, on a PostgreSQL started with "
        "pg_stat_statements (its time per request in the server column)",
    )


async def check(config: Config, built: Built) -> None:
    """Fail loudly if an app does not do what its numbers claim."""
    for endpoint in config.endpoints:
        reply = await call(built.app, f"/{endpoint}", built.cookie)
        if reply.status != 200 or reply.body != b"alice":
            raise RuntimeError(f"{config.name}: /{endpoint} answered {reply.status} {reply.body!r}")


Samples = dict[str, dict[str, list[float]]]


@dataclass
class Run:
    """One run of the measurement: per basis, configuration and endpoint, one figure per
    round (the median of its requests); the Redis server's CPU per request per round and
    its commands summed over rounds; and each round's load and order."""

    wall: Samples = field(default_factory=dict)
    cpu: Samples = field(default_factory=dict)
    server: Samples = field(default_factory=dict)
    commands: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    meter_cost_us: float | None = None  # an empty cell's Redis server CPU, taken off

    def bases(self) -> dict[str, Samples]:
        return {"wall": self.wall, "cpu": self.cpu}

    def data(self) -> dict[str, Any]:
        return {
            "samples_us": self.wall,
            "samples_cpu_us": self.cpu,
            "redis_server_us": self.server,
            "redis_commands": self.commands,
            "rounds": self.rounds,
            "redis_meter_cost_us": self.meter_cost_us,
        }


async def measure(
    configs: list[Config],
    env: Env,
    rounds: int,
    per_round: int,
    skipped: dict[str, str],
    meters: dict[str, Meter],
) -> Run:
    """Every configuration's cells, round by round (A B C ..., A B C ...)."""
    built: dict[str, Built] = {}
    try:
        for config in configs:
            try:
                built[config.name] = await build(config, env)
            except Skip as exc:
                skipped[config.name] = str(exc)
                continue
            await check(config, built[config.name])
        live = [c for c in configs if c.name in built]
        run = Run()
        for number in range(-1, rounds):  # round -1 warms up: imports, connections, caches
            load_start, started = os.getloadavg(), time.monotonic()
            for config in live:  # drift hits every configuration alike
                b = built[config.name]
                cell_meter = meters.get(
                    "redis" if config.needs_redis else "postgres" if config.needs_postgres else ""
                )
                for endpoint in config.endpoints:
                    if cell_meter:
                        server_start = await cell_meter.start()
                    wall, cpu = await timed_both(b.app, f"/{endpoint}", b.cookie, per_round)
                    if cell_meter:
                        server, commands = await cell_meter.stop(server_start)
                    if number < 0:
                        continue
                    run.wall.setdefault(config.name, {}).setdefault(endpoint, []).append(
                        statistics.median(wall)
                    )
                    run.cpu.setdefault(config.name, {}).setdefault(endpoint, []).append(
                        statistics.median(cpu)
                    )
                    if cell_meter:
                        cell = run.server.setdefault(config.name, {})
                        cell.setdefault(endpoint, []).append(server / per_round)
                        total = run.commands.setdefault(config.name, {}).setdefault(endpoint, {})
                        for name, figures in commands.items():
                            into = total.setdefault(name, {"calls": 0, "usec": 0})
                            into["calls"] += figures["calls"]
                            into["usec"] += figures["usec"]
            if number >= 0:
                run.rounds.append(
                    {
                        "round": number + 1,
                        "order": [c.name for c in live],
                        "load_start": load_start,
                        "load_end": os.getloadavg(),
                        "seconds": round(time.monotonic() - started, 3),
                    }
                )
            log(f"  round {number + 1}/{rounds} (load {os.getloadavg()[0]:.2f})")
        return run
    finally:
        for b in built.values():
            await b.aclose()


def pooled(runs: list[Run], basis: str) -> Samples:
    """Every run's rounds together, per configuration and endpoint."""
    out: Samples = {}
    for run in runs:
        for name, endpoints in getattr(run, basis).items():
            for endpoint, values in endpoints.items():
                out.setdefault(name, {}).setdefault(endpoint, []).extend(values)
    return out


def _cell(samples: Samples, name: str, endpoint: str, digits: int = 1) -> str:
    values = samples.get(name, {}).get(endpoint)
    return fmt(values, digits=digits) if values else "-"


def cells(runs: list[Run], configs: list[Config]) -> list[str]:
    wall, cpu, server = pooled(runs, "wall"), pooled(runs, "cpu"), pooled(runs, "server")
    head = " | ".join(f"{e} wall | {e} CPU" for e in ENDPOINTS)
    lines = [
        f"| configuration | {head} | server us read / write |",
        "|---|" + "---:|" * (2 * len(ENDPOINTS) + 1),
    ]
    for config in configs:
        if config.name in wall:
            row = [
                f"{_cell(wall, config.name, e)} | {_cell(cpu, config.name, e)}" for e in ENDPOINTS
            ]
            redis = " / ".join(_median(server, config.name, e) for e in ("read", "write"))
            redis = "-" if config.name not in server else redis
            lines.append(
                f"| `{config.name}` ({config.label}) | " + " | ".join(row) + f" | {redis} |"
            )
    return lines


def _median(samples: Samples, name: str, endpoint: str) -> str:
    values = samples.get(name, {}).get(endpoint)
    return f"{statistics.median(values):.1f}" if values else "-"


def sweep_cells(runs: list[Run]) -> list[str]:
    wall, cpu = pooled(runs, "wall"), pooled(runs, "cpu")
    sizes = [f"{s // 1000} KB wall | {s // 1000} KB CPU" for s in SWEEP_SIZES]
    lines = [
        "| store (write, one key changed) | " + " | ".join(sizes) + " |",
        "|---|" + "---:|---:|" * len(SWEEP_SIZES),
    ]
    for family in dict.fromkeys(c.name.rsplit("-", 1)[0] for c in SWEEP):
        row = [
            f"{_cell(wall, n, 'write')} | {_cell(cpu, n, 'write')}"
            for n in (f"{family}-{s // 1000}k" for s in SWEEP_SIZES)
        ]
        lines.append(f"| `{family}` | " + " | ".join(row) + " |")
    return lines


def _ratio(row: dict[str, Any], basis: str) -> str:
    figure = row.get(basis)
    if not figure:
        return "-"
    text = f"{figure['ratio']:.2f}x [{figure['p10']:.2f}-{figure['p90']:.2f}]"
    return f"**{text}**" if basis == row["basis"] and row["verdict"] != "info" else text


def ratio_table(rows: list[dict[str, Any]], server: Samples) -> list[str]:
    lines = [
        "| case | configuration | against | wall ratio [p10-p90] | CPU ratio [p10-p90] "
        "| server us, this / floor | goal | verdict |",
        "|---|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        verdict = r["verdict"]
        verdict = f"**{verdict}**" if verdict.startswith("MISS") else verdict
        mine, floor = (_median(server, n, r["endpoint"]) for n in (r["config"], r["floor"]))
        redis = "-" if mine == floor == "-" else f"{mine} / {floor}"
        lines.append(
            f"| {r['case']} | `{r['config']}` | `{r['floor']}` | {_ratio(r, 'wall')} "
            f"| {_ratio(r, 'cpu')} | {redis} | {r['goal']} | {verdict} |"
        )
    return lines


def runs_table(rows: list[dict[str, Any]], runs: int) -> list[str]:
    """Each goal's ratio per run, on the basis it is judged on, side by side."""
    numbers = range(1, runs + 1)
    lines = [
        "| case | goal | basis | " + " | ".join(f"run {n}" for n in numbers) + " | verdict |",
        "|---|---|---|" + "---:|" * runs + "---|",
    ]
    for r in rows:
        if r["met"] is None:
            continue
        figures = []
        for number, (value, met) in enumerate(zip(r[r["basis"]]["per_run"], r["met"], strict=True)):
            text = f"{value:.2f}x" if met else f"**{value:.2f}x**"
            for peer, theirs in r["peers_per_run"].items():  # the goal's own figure
                text += f" ({value / theirs[number]:.2f}x `{peer}`)" if theirs else ""
            figures.append(text)
        basis = "CPU" if r["basis"] == "cpu" else "wall"
        spreads = " / ".join(f"{r['spread'][b]:.2f}" for b in BASES)
        lines.append(
            f"| {r['case']} | {r['goal']} | {basis} (spread {spreads}) | "
            + " | ".join(figures)
            + (
                f" | **{r['verdict']}** |"
                if r["verdict"].startswith("MISS")
                else f" | {r['verdict']} |"
            )
        )
    return lines


def commands_table(runs: list[Run], per_cell: int) -> list[str]:
    """Per Redis cell: the server's CPU per request, and each command's calls per request
    and ``usec_per_call`` (all runs' rounds together)."""
    server = pooled(runs, "server")
    lines = [
        "| configuration | endpoint | server us / request | commands: calls per request "
        "x usec_per_call |",
        "|---|---|---:|---|",
    ]
    for name, endpoints in server.items():
        for endpoint, values in endpoints.items():
            total: dict[str, list[int]] = {}
            for run in runs:
                for command, f in run.commands.get(name, {}).get(endpoint, {}).items():
                    into = total.setdefault(command, [0, 0])
                    into[0] += f["calls"]
                    into[1] += f["usec"]
            requests = per_cell * len(runs)
            listed = ", ".join(
                f"`{command}` {calls / requests:.2f} x {usec / calls:.1f}"
                for command, (calls, usec) in sorted(total.items())
                if calls
            )
            lines.append(f"| `{name}` | {endpoint} | {fmt(values)} | {listed or '-'} |")
    return lines


def load_line(runs: list[Run]) -> str:
    starts = [r["load_start"][0] for run in runs for r in run.rounds]
    ends = [r["load_end"][0] for run in runs for r in run.rounds]
    if not starts:
        return ""
    return (
        f"Load average (1 min) over the rounds: {min(starts + ends):.2f}-{max(starts + ends):.2f} "
        f"({starts[0]:.2f} at the first round's start, {ends[-1]:.2f} at the last one's end; "
        f"{os.cpu_count()} CPUs). Each round's load and order are in the results JSON."
    )


BASIS_RULE = (
    "Each goal is judged on the steadier basis of the two: the one whose per-round ratios "
    "(ours over the floor) spread less, relative spread (p90 - p10) / median, the median "
    "over runs; wall on a tie. The judged figure is in bold; a goal counts as met only "
    "where every run meets it. CPU is this process's (every thread: aiosqlite's too); the "
    "store server's own time per request is beside it."
)


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (4 if ctx.quick else 25)
    per_round = args.per_round or (30 if ctx.quick else 120)
    repeats = args.runs or (1 if ctx.quick else 3)
    configs = [*CONFIGS, *([] if args.no_sweep else SWEEP)]
    if args.postgres:
        configs += POSTGRES_CONFIGS
    if args.only:
        configs = [c for c in configs if c.name in args.only.split(",")]
    skipped: dict[str, str] = {}
    urls: dict[str, str] = {}
    for kind, spec in (("redis", REDIS), ("postgres", STATEMENTS)):
        if any(kind in c.name for c in configs):
            try:
                urls[kind] = ctx.services.url(spec)
            except Unavailable as exc:
                skipped.update({c.name: str(exc) for c in configs if kind in c.name})
                configs = [c for c in configs if kind not in c.name]
    notes = []
    if "redis" in urls and ctx.services.external(REDIS):
        notes.append(
            "Redis server CPU not measured: REDIS_URL names a server this run does not own, "
            "and measuring resets its statistics (CONFIG RESETSTAT)."
        )
    log(f"  {len(configs)} configurations, {repeats} runs x {rounds} rounds x {per_round}")
    env = Env(
        redis_url=urls.get("redis", ""),
        tmpdir=str(ctx.tmpdir),
        postgres_url=urls.get("postgres", ""),
    )

    async def measure_all() -> list[Run]:
        meters: dict[str, Meter] = {}
        redis_meter = RedisMeter(urls["redis"]) if "redis" in urls and not notes else None
        if redis_meter:
            meters["redis"] = redis_meter
        if "postgres" in urls:
            try:
                meters["postgres"] = await PostgresMeter.connect(urls["postgres"])
            except Unavailable as exc:
                notes.append(f"PostgreSQL server time not measured: {exc}.")
        try:
            out = []
            for number in range(repeats):
                log(f"  run {number + 1}/{repeats}")
                cost = await redis_meter.calibrate() if redis_meter else None
                out.append(await measure(configs, env, rounds, per_round, skipped, meters))
                out[-1].meter_cost_us = cost
            return out
        finally:
            for meter in meters.values():
                await meter.aclose()

    runs = asyncio.run(measure_all())
    bases = [r.bases() for r in runs]
    rows = judged_rows(bases, CASES)
    sweep_rows = judged_rows(bases, SWEEP_CASES)
    postgres_rows = judged_rows(bases, POSTGRES_CASES)
    server = pooled(runs, "server")
    ratios = [
        "Median of per-round ratios [p10-p90], every run's rounds together; lower is "
        "better. Goals from issue 24; a goal naming a configuration is relative to that "
        "configuration's ratio. " + BASIS_RULE,
        "",
        *ratio_table(rows, server),
        "",
        f"Each goal's ratio in each of {repeats} runs in a row, on its basis (spread: "
        "relative p10-p90 spread of wall / CPU); a miss in bold:",
        "",
        *runs_table(rows, repeats),
    ]
    lines = [
        f"{repeats} runs in a row x {rounds} interleaved rounds x {per_round} requests per "
        "cell; a cell's figure per round is the median of its requests. " + load_line(runs),
        "",
        *cells(runs, [c for c in configs if c not in SWEEP]),
        "",
        "### Ratios",
        "",
        *ratios,
    ]
    if server:
        costs = ", ".join(f"{r.meter_cost_us:.0f}" for r in runs if r.meter_cost_us is not None)
        lines += [
            "",
            "### Server time per request",
            "",
            "Redis: the server process's CPU (`INFO cpu`, user + system, after `CONFIG "
            "RESETSTAT`) per request, less what an empty cell shows (the statistics "
            f"commands' own and the server's timer: {costs or '-'} us per cell, by run), and "
            "`INFO commandstats` per command (a script's usec includes the commands it "
            "calls, listed too). PostgreSQL (`--postgres`): planning and execution time "
            "from `pg_stat_statements`, per statement.",
            "",
            *commands_table(runs, rounds * per_round),
        ]
    if postgres_rows:
        lines += ["", "### PostgreSQL (no goal)", "", *ratio_table(postgres_rows, server)]
    elif not args.postgres:
        notes.append(
            "PostgreSQL: no cell by default (`--postgres` adds ours and the raw asyncpg "
            "floor, on a server started with `pg_stat_statements`, whose time per request "
            "then fills the server column)."
        )
    if any(c in SWEEP for c in configs):
        lines += [
            "",
            "### Write-size sweep (session of N KB, one small key changed)",
            "",
            *sweep_cells(runs),
            "",
            *ratio_table(sweep_rows, server),
            "",
            *runs_table(sweep_rows, repeats),
        ]
    lines += [line for note in notes for line in ("", note)]
    chart = None
    if rows:
        from ..chart import draw

        chart = draw(rows, ctx.out / "ratios.png")
        ratios = [f"![ratios](bench/results/{chart.name})", "", *ratios]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"`{k}`: {v}" for k, v in skipped.items())]
    data = {
        "rounds": rounds,
        "per_round": per_round,
        "runs": [r.data() for r in runs],
        "samples_us": pooled(runs, "wall"),
        "samples_cpu_us": pooled(runs, "cpu"),
        "ratios": rows,
        "sweep_ratios": sweep_rows,
        "postgres_ratios": postgres_rows,
        "basis_rule": BASIS_RULE,
        "cpu_clock_cost_ns": cpu_clock_cost(),
        "skipped": skipped,
        "chart": str(chart),
    }
    return Section(TITLE, lines, data, readme=ratios)
