"""Every configuration called in-process through ASGI, interleaved round by round: median
microseconds per request, wall and CPU, ratios against the floors on both (with the goals,
each judged on the steadier basis and over several runs in a row), the store server's own
time per request (:mod:`bench.meters`), each round's load and order, a write-size sweep,
and the ratio chart.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from ..apps import (
    CONFIGS,
    ENDPOINTS,
    SWEEP,
    SWEEP_SIZES,
    Built,
    Config,
    Env,
    Skip,
    build,
)
from ..asgi import call, cpu_clock_cost, timed
from ..harness import Context, Section, log, sized, table
from ..meters import RedisMeter
from ..services import REDIS, Unavailable
from ..stats import BASES, Case, Goal, fmt, judged_rows

TITLE = (
    "In-process (ASGI called directly), median us per request, wall and CPU "
    "[p10-p90 of round medians]"
)

# Issue 24's goals (issue 16's, untouched raised to 1.10x): ours against the floor, the
# peers beside it.
U, AUTOLOAD = (Goal(1.10),), ("starsessions-memory", "starsessions-memory-autoload")
CASES = [
    Case("untouched, memory", "untouched", "bare", "ours-memory", U,
         ("ours-memory-autoload", "starlette", *AUTOLOAD)),
    Case("untouched, SQLite", "untouched", "bare", "ours-sqlite", U),
    Case("untouched, Redis", "untouched", "bare", "ours-redis", U, ("starsessions-redis",)),
    Case("untouched, cookie", "untouched", "bare", "ours-cookie", U),
    Case("memory read", "read", "bare", "ours-memory", (Goal(1.8),),
         ("ours-memory-autoload", *AUTOLOAD)),
    Case("memory write", "write", "bare", "ours-memory", (Goal(2.5),), ("starsessions-memory",)),
    Case("cookie read", "read", "bare", "ours-cookie", (Goal(0.8, "starlette"),), ("starlette",)),
    Case("cookie write", "write", "bare", "ours-cookie", (Goal(1.0, "starlette"),), ("starlette",)),
    Case("Redis read", "read", "raw-redis", "ours-redis", (Goal(1.15),),
         ("starsessions-redis", "starsessions-redis-autoload")),
    Case("Redis write", "write", "raw-redis", "ours-redis",
         (Goal(1.15), Goal(1.0, "starsessions-redis")), ("starsessions-redis",)),
    Case("SQLite read", "read", "raw-sqlite", "ours-sqlite", (Goal(1.2),)),
    Case("SQLite write", "write", "raw-sqlite", "ours-sqlite", (Goal(1.3),)),
]  # fmt: skip
SWEEP_CASES = [
    Case(f"{family} write, 100 KB / 1 KB", "write", f"{family}-1k", f"{family}-100k", goals)
    for family, goals in (
        ("ours-sqlite", (Goal(1.5),)),
        ("ours-redis", (Goal(1.5),)),
        ("starsessions-redis", ()),
    )
]
BLOCKS = 4  # slices of a cell per round (see measure())
BASIS_RULE = (
    "Each goal is judged on the steadier basis of the two: the one whose per-round ratios "
    "(ours over the floor) spread less, relative spread (p90 - p10) / median, the median "
    "over runs; wall on a tie. The judged figure is in bold; a goal counts as met only "
    "where every run meets it. CPU is this process's (every thread: aiosqlite's too); the "
    "store server's own time per request is beside it."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, rounds=(25, 4, "interleaved rounds"), per_round=(120, 30, "requests per cell"))
    sized(parser, runs=(3, 1, "the whole measurement this many times in a row; a goal is met "
                           "only where every run meets it"))  # fmt: skip
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--no-sweep", action="store_true", help="skip the write-size sweep")


Samples = dict[str, dict[str, list[float]]]


@dataclass
class Run:
    """One run of the measurement: per basis, configuration and endpoint, one figure per
    round (the median of its requests); the store server's time per request per round and
    its commands summed over rounds; and each round's load and order."""

    wall: Samples = field(default_factory=dict)
    cpu: Samples = field(default_factory=dict)
    server: Samples = field(default_factory=dict)
    commands: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)
    rounds: list[dict[str, Any]] = field(default_factory=list)
    meter_cost_us: float | None = None  # an empty cell's Redis server CPU, taken off

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
    meter: RedisMeter | None,
    skipped: dict[str, str],
    blocks: int,
) -> Run:
    """Every configuration's cells, round by round, endpoint by endpoint, in slices."""
    built: dict[str, Built] = {}
    try:
        for config in configs:
            try:
                built[config.name] = b = await build(config, env)
            except Skip as exc:
                skipped[config.name] = str(exc)
                continue
            for endpoint in config.endpoints:  # fail loudly if an app does not do its job
                reply = await call(b.app, f"/{endpoint}", b.cookie)
                if reply.status != 200 or reply.body != b"alice":
                    raise RuntimeError(f"{config.name}: /{endpoint} answered {reply.status}")
        configs = [c for c in configs if c.name in built]
        run = Run()
        size = per_round // blocks
        for number in range(-1, rounds):  # round -1 warms up: imports, connections, caches
            load_start, started = os.getloadavg(), time.monotonic()
            # Endpoint by endpoint, each cell's requests in `blocks` slices taken in turn
            # (A B C A B C ...), the order rotated every round: this machine's speed
            # swings in phases of seconds, and a ratio is only as good as how close in
            # time its two cells ran.
            order = configs[number % len(configs) :] + configs[: number % len(configs)]
            for endpoint in ENDPOINTS:
                cell: dict[str, tuple[list[float], list[float], list[float]]] = {}
                for _, config in itertools.product(range(blocks), order):
                    if endpoint not in config.endpoints:
                        continue
                    b, metered = built[config.name], meter if config.needs_redis else None
                    server_start = await metered.start() if metered else 0.0
                    w, c = await timed(b.app, f"/{endpoint}", b.cookie, size)
                    wall, cpu, server = cell.setdefault(config.name, ([], [], []))
                    wall += w
                    cpu += c
                    if metered:
                        used, commands = await metered.stop(server_start)
                        server.append(used / (size * blocks))  # this slice's share
                        total = run.commands.setdefault(config.name, {}).setdefault(endpoint, {})
                        for name, figures in commands.items() if number >= 0 else ():
                            into = total.setdefault(name, {"calls": 0, "usec": 0})
                            into["calls"] += figures["calls"]
                            into["usec"] += figures["usec"]
                for name, (wall, cpu, server) in cell.items() if number >= 0 else ():
                    for into, figures in ((run.wall, wall), (run.cpu, cpu)):
                        into.setdefault(name, {}).setdefault(endpoint, []).append(
                            statistics.median(figures)
                        )
                    if server:
                        run.server.setdefault(name, {}).setdefault(endpoint, []).append(sum(server))
            if number >= 0:
                seconds, names = round(time.monotonic() - started, 3), [c.name for c in order]
                kept = dict(order=names, blocks=blocks, load_start=load_start, seconds=seconds)
                run.rounds.append({"round": number + 1, **kept, "load_end": os.getloadavg()})
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


def _cell(samples: Samples, name: str, endpoint: str) -> str:
    values = samples.get(name, {}).get(endpoint)
    return fmt(values) if values else "-"


def _median(samples: Samples, name: str, endpoint: str) -> str:
    values = samples.get(name, {}).get(endpoint)
    return f"{statistics.median(values):.1f}" if values else "-"


def cells(runs: list[Run], configs: list[Config]) -> list[str]:
    wall, cpu, server = pooled(runs, "wall"), pooled(runs, "cpu"), pooled(runs, "server")
    rows = []
    for c in (c for c in configs if c.name in wall):
        row = [f"`{c.name}` ({c.label})"]
        row += [_cell(x, c.name, e) for e in ENDPOINTS for x in (wall, cpu)]
        served = " / ".join(_median(server, c.name, e) for e in ("read", "write"))
        rows.append([*row, served if c.name in server else "-"])
    head = [f"{e} {basis}:" for e in ENDPOINTS for basis in ("wall", "CPU")]
    return table(["configuration", *head, "server us read / write:"], rows)


def sweep_cells(runs: list[Run]) -> list[str]:
    wall, cpu = pooled(runs, "wall"), pooled(runs, "cpu")
    rows = []
    for family in dict.fromkeys(c.name.rsplit("-", 1)[0] for c in SWEEP):
        names = [f"{family}-{s // 1000}k" for s in SWEEP_SIZES]
        rows.append([f"`{family}`", *(_cell(x, n, "write") for n in names for x in (wall, cpu))])
    head = [f"{s // 1000} KB {basis}:" for s in SWEEP_SIZES for basis in ("wall", "CPU")]
    return table(["store (write, one key changed)", *head], rows)


def _ratio(row: dict[str, Any], basis: str) -> str:
    if not (figure := row.get(basis)):
        return "-"
    text = f"{figure['ratio']:.2f}x [{figure['p10']:.2f}-{figure['p90']:.2f}]"
    return f"**{text}**" if basis == row["basis"] and row["verdict"] != "info" else text


def _verdict(text: str) -> str:
    return f"**{text}**" if text.startswith("MISS") else text


def ratio_table(rows: list[dict[str, Any]], server: Samples) -> list[str]:
    cells = []
    for r in rows:
        mine, floor = (_median(server, n, r["endpoint"]) for n in (r["config"], r["floor"]))
        served = "-" if mine == floor == "-" else f"{mine} / {floor}"
        cell = [r["case"], f"`{r['config']}`", f"`{r['floor']}`", _ratio(r, "wall")]
        cells.append([*cell, _ratio(r, "cpu"), served, r["goal"], _verdict(r["verdict"])])
    head = ["case", "configuration", "against", "wall ratio [p10-p90]:", "CPU ratio [p10-p90]:"]
    return table([*head, "server us, this / floor:", "goal", "verdict"], cells)


def runs_table(rows: list[dict[str, Any]], runs: int) -> list[str]:
    """Each goal's ratio per run, on the basis it is judged on, side by side."""
    cells = []
    for r in (r for r in rows if r["met"] is not None):
        figures = []
        for number, (value, met) in enumerate(zip(r[r["basis"]]["per_run"], r["met"], strict=True)):
            text = f"{value:.2f}x" if met else f"**{value:.2f}x**"
            for peer, theirs in r["peers_per_run"].items():  # the goal's own figure
                text += f" ({value / theirs[number]:.2f}x `{peer}`)" if theirs else ""
            figures.append(text)
        spreads = " / ".join(f"{r['spread'][b]:.2f}" for b in BASES)
        basis = f"{'CPU' if r['basis'] == 'cpu' else 'wall'} (spread {spreads})"
        cells.append([r["case"], r["goal"], basis, *figures, _verdict(r["verdict"])])
    head = ["case", "goal", "basis", *(f"run {n}:" for n in range(1, runs + 1)), "verdict"]
    return table(head, cells)


def commands_table(runs: list[Run], per_cell: int) -> list[str]:
    """Per store cell: the server's time per request, and each command's calls per request
    and ``usec_per_call`` (all runs' rounds together)."""
    rows = []
    for name, endpoints in pooled(runs, "server").items():
        for endpoint, values in endpoints.items():
            total: dict[str, list[int]] = {}
            for run in runs:
                for command, f in run.commands.get(name, {}).get(endpoint, {}).items():
                    into = total.setdefault(command, [0, 0])
                    into[0] += f["calls"]
                    into[1] += f["usec"]
            listed = ", ".join(
                f"`{command}` {calls / (per_cell * len(runs)):.2f} x {usec / calls:.1f}"
                for command, (calls, usec) in sorted(total.items())
                if calls
            )
            rows.append([f"`{name}`", endpoint, fmt(values), listed or "-"])
    head = ["configuration", "endpoint", "server us / request:"]
    return table([*head, "commands: calls per request x usec_per_call"], rows)


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


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds, repeats = args.rounds, args.runs
    per_round = max(BLOCKS, args.per_round - args.per_round % BLOCKS)
    configs = [*CONFIGS, *([] if args.no_sweep else SWEEP)]
    configs = [c for c in configs if not args.only or c.name in args.only.split(",")]
    skipped: dict[str, str] = {}
    urls: dict[str, str] = {}
    if any(c.needs_redis for c in configs):
        try:
            urls["redis"] = ctx.services.url(REDIS)
        except Unavailable as exc:
            skipped.update({c.name: str(exc) for c in configs if c.needs_redis})
            configs = [c for c in configs if not c.needs_redis]
    notes = []
    if "redis" in urls and ctx.services.external(REDIS):
        notes.append(
            "Redis server CPU not measured: REDIS_URL names a server this run does not own, "
            "and measuring resets its statistics (CONFIG RESETSTAT)."
        )
    log(f"  {len(configs)} configurations, {repeats} runs x {rounds} rounds x {per_round}")
    env = Env(urls.get("redis", ""), str(ctx.tmpdir))

    async def measure_all() -> list[Run]:
        meter = RedisMeter(urls["redis"]) if "redis" in urls and not notes else None
        try:
            out = []
            for number in range(repeats):
                log(f"  run {number + 1}/{repeats}")
                cost = await meter.calibrate() if meter else None
                out.append(await measure(configs, env, rounds, per_round, meter, skipped, BLOCKS))
                out[-1].meter_cost_us = cost
            return out
        finally:
            if meter:
                await meter.aclose()

    runs = asyncio.run(measure_all())
    bases = [{"wall": r.wall, "cpu": r.cpu} for r in runs]
    rows, sweep_rows = judged_rows(bases, CASES), judged_rows(bases, SWEEP_CASES)
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
        f"cell, endpoint by endpoint, each cell in {BLOCKS} slices taken in turn with the "
        "other cells' (A B C A B C ...), the order rotated every round; a cell's figure per "
        "round is the median of its requests. " + load_line(runs),
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
            "calls, listed too).",
            "",
            *commands_table(runs, rounds * per_round),
        ]
    if any(c in SWEEP for c in configs):
        lines += ["", "### Write-size sweep (session of N KB, one small key changed)", ""]
        lines += [*sweep_cells(runs), "", *ratio_table(sweep_rows, server), ""]
        lines += runs_table(sweep_rows, repeats)
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
        "basis_rule": BASIS_RULE,
        "cpu_clock_cost_ns": cpu_clock_cost(),
        "skipped": skipped,
        "chart": str(chart),
    }
    return Section(TITLE, lines, data, readme=ratios)
