"""PostgresStore against raw asyncpg (a load against a SELECT by primary key, a save of one
key against SELECT + upsert, 100 KB against 1 KB), 64 concurrent writers, a load among
1,000,000 sessions against among 1,000, ``clear_expired`` of 1,000,000 beside live saves,
and four uvicorn processes writing the same sessions at once (also what
``tests/stores/test_postgres_processes.py`` runs, with a fixed number of writes).

On the run's PostgreSQL server (fsync off; ``--durable``: a server with fsync and
synchronous_commit on, as in production), in a scratch schema dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time
from collections import Counter
from typing import Any

from ..apps import change
from ..harness import Context, Section, log, sized, table
from ..pg import POSTGRES, POSTGRES_DURABLE, scratch_schema, server_setting, store_like_pool
from ..served import Result, run_writers
from ..stats import goals_table, ops_table, percentile, time_ops

TITLE = "PostgresStore"
FIGURES = ("latency", "concurrency", "scale", "purge", "processes")
LOAD, SELECT = "PostgresStore.load (1 KB)", "raw SELECT by primary key (1 KB)"
SAVE, UPSERT = "PostgresStore.save of 1 key (1 KB)", "raw SELECT + upsert (1 KB)"
SAVE_100K = "PostgresStore.save of 1 key (100 KB)"
GOALS = (  # (label, ours, against, at most this many times)
    ("load / raw SELECT", LOAD, SELECT, 1.2),
    ("save 1 key / (raw SELECT + upsert)", SAVE, UPSERT, 1.3),
    ("save 1 key, 100 KB / 1 KB session", SAVE_100K, SAVE, 1.5),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", help=f"comma-separated, of {', '.join(FIGURES)} (all)")
    parser.add_argument("--durable", action="store_true", help="fsync and synchronous_commit on")
    parser.add_argument("--processes", type=int, default=4, help="uvicorn processes (4)")
    sized(parser, sessions=(1_000_000, 10_000, "stored sessions for scale and purge"))
    sized(parser, rounds=(11, 3, "interleaved rounds"), ops=(200, 50, "calls per round"))
    sized(parser, saves=(100, 20, "saves per concurrent writer"))
    sized(
        parser, clients=(16, 4, "sessions the processes write"), seconds=(10.0, 2.0, "of writing")
    )
    sized(parser, writers=(8, 4, "concurrent writers per session"))


def session_data(size: int) -> dict[str, str]:
    """About ``size`` bytes over keys of ~100-byte JSON strings (random, so TOAST cannot
    shrink them)."""
    return {f"key{i:05d}": json.dumps(random.randbytes(48).hex()) for i in range(size // 110)}


async def against_raw(dsn: str, rounds: int, n: int) -> dict[str, tuple[float, float]]:
    """The store's load and save against the raw statements a minimal store would run, on
    one connection each (the raw pool set up as the store's)."""
    from asgi_sessions.stores.postgres import PostgresStore

    store = PostgresStore(dsn, table="bench_store", min_size=1, max_size=1)
    raw = await store_like_pool(dsn, max_size=1)
    try:
        small, one = session_data(1024), session_data(110)
        await store.save("small" * 9, change(small, create=True))
        await store.save("large" * 9, change(session_data(100 * 1024), create=True))
        blob, raw_id = json.dumps(small), random.randbytes(32)
        await raw.execute("CREATE TABLE raw (id bytea PRIMARY KEY, data text, expires_at float8)")
        await raw.execute("INSERT INTO raw VALUES ($1, $2, $3)", raw_id, blob, time.time() + 3600)

        async def select() -> Any:
            return await raw.fetchval(
                "SELECT data FROM raw WHERE id = $1 AND expires_at > $2", raw_id, time.time()
            )

        async def select_upsert() -> Any:
            await select()
            return await raw.execute(
                "INSERT INTO raw VALUES ($1, $2, $3) ON CONFLICT (id) DO UPDATE "
                "SET data = excluded.data, expires_at = excluded.expires_at",
                raw_id, blob, time.time() + 3600,
            )  # fmt: skip

        ops = {SELECT: select, LOAD: lambda: store.load("small" * 9), UPSERT: select_upsert}
        ops[SAVE] = lambda: store.save("small" * 9, change(one, create=False))
        ops[SAVE_100K] = lambda: store.save("large" * 9, change(one, create=False))
        return await time_ops(ops, rounds, n)
    finally:
        await store.aclose()
        await raw.close()


async def concurrency(dsn: str, saves: int, writers: int = 64) -> dict[str, Any]:
    """``writers`` tasks of ``saves`` saves each, through a pool of 16, to one session and
    to one session each: saves/s, failures by type, acknowledged writes not stored after."""
    from asgi_sessions.errors import SessionError
    from asgi_sessions.stores.postgres import PostgresStore

    async def writer(n: int, key: str, errors: Counter[str], acked: dict[str, Any]) -> None:
        for i in range(saves):
            value = json.dumps(f"{n}:{i}")
            try:
                await store.save(key, change({f"w{n}": value, "all": value}, create=False))
            except SessionError as exc:
                errors[type(exc).__name__] += 1
                continue
            acked[key, f"w{n}"] = value

    out = {}
    async with PostgresStore(dsn, table="bench_concurrency", max_size=16) as store:
        for sessions in (1, writers):
            keys = [f"c{sessions}-{n:02d}".ljust(43, "x") for n in range(sessions)]
            for key in keys:
                await store.save(key, change({"seed": "0"}, create=True))
            errors: Counter[str] = Counter()
            acked: dict[tuple[str, str], str] = {}
            started = time.perf_counter()
            await asyncio.gather(
                *(writer(n, keys[n % sessions], errors, acked) for n in range(writers))
            )
            elapsed, lost = time.perf_counter() - started, 0
            for (key, name), value in acked.items():
                stored = await store.load(key)
                lost += stored is None or stored.data.get(name) != value
            label = "to one session" if sessions == 1 else f"to {sessions} sessions"
            out[label] = {"saves_per_s": writers * saves / elapsed, "lost": lost}
            out[label]["errors"] = dict(sorted(errors.items()))
    return out


async def fill(dsn: str, table: str, rows: int, *, expires_at: float) -> None:
    """``rows`` sessions (keys ``filler{i}``; data keys user, theme and cart), expiring at
    ``expires_at``, written by SQL straight into the tables of ``PostgresStore(dsn,
    table=table)`` (created first through the store). Its layout is the store's
    (``postgres_schema.sql``): a load of a filler checks it still is."""
    import asyncpg

    from asgi_sessions.stores.postgres import PostgresStore

    async with PostgresStore(dsn, table=table) as store:
        await store.load("warm-up")  # creates the schema
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"INSERT INTO {table} (id, created_at, updated_at, expires_at, purge_after) "  # noqa: S608
            "SELECT sha256(convert_to('filler' || n, 'UTF8')), $1::float8, $1, $2::float8, "
            "floor($2::float8 / 3600) * 3600 FROM generate_series(0, $3 - 1) AS n",
            time.time(), expires_at, rows,
        )  # fmt: skip
        await conn.execute(
            f"INSERT INTO {table}_data (sid, key, value) "  # noqa: S608
            "SELECT pk, k, '\"' || md5(pk::text || k) || '\"' "
            f"FROM {table}, unnest(ARRAY['user', 'theme', 'cart']) AS k"
        )
        await conn.execute(f"VACUUM ANALYZE {table}, {table}_data")
    finally:
        await conn.close()


async def scale(dsn: str, rows: int, rounds: int, n: int) -> dict[str, Any]:
    """A load of a random one of ``rows`` sessions against one of 1,000."""
    from asgi_sessions.stores.postgres import PostgresStore

    started = time.perf_counter()
    await fill(dsn, "bench_many", rows, expires_at=time.time() + 3600)
    await fill(dsn, "bench_few", 1000, expires_at=time.time() + 3600)
    fill_s = time.perf_counter() - started
    async with (
        PostgresStore(dsn, table="bench_many", max_size=1) as many,
        PostgresStore(dsn, table="bench_few", max_size=1) as few,
    ):

        async def load(store: PostgresStore, count: int) -> None:
            if await store.load(f"filler{random.randrange(count)}") is None:
                raise RuntimeError("the filler no longer matches PostgresStore's tables")

        ops = {f"among {rows:,}": lambda: load(many, rows), "among 1,000": lambda: load(few, 1000)}
        return {"fill_s": fill_s, "loads": await time_ops(ops, rounds, n)}


async def purge(dsn: str, rows: int, writers: int = 16) -> dict[str, Any]:
    """``clear_expired()`` of ``rows`` expired sessions while ``writers`` tasks save live
    ones: each batch (the server's seconds, the longest any of its row locks was held; its
    size; the seconds this process saw it take), and the saves' times."""
    from asgi_sessions.stores.postgres import PostgresStore

    await fill(dsn, "bench_purge", rows, expires_at=time.time() - 60)
    saves: list[float] = []
    batches: list[tuple[float, int, float]] = []
    async with PostgresStore(dsn, table="bench_purge", max_size=4) as store:
        live = [f"live-{n}" + "x" * 36 for n in range(writers)]
        for key in live:
            await store.save(key, change({"n": "0"}, create=True))
        original = store._purge_batch  # below the public API: each batch, as it runs

        async def timed_batch(pool: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            row = await original(pool, **kwargs)
            batches.append((row[3], kwargs["size"], time.perf_counter() - started))
            return row

        store._purge_batch = timed_batch  # type: ignore[method-assign]
        done = asyncio.Event()

        async def writer(key: str) -> None:
            while not done.is_set():
                started = time.perf_counter()
                await store.save(key, change({"n": str(len(saves))}, create=False))
                saves.append(time.perf_counter() - started)
                await asyncio.sleep(0.005)

        tasks = [asyncio.create_task(writer(key)) for key in live]
        started = time.perf_counter()
        removed = await store.clear_expired()
        total = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
    out = {"removed": removed, "seconds": total, "target_batch_s": store.purge_batch_seconds}
    return out | {"batches": batches, "saves_s": sorted(saves)}


def processes(
    dsn: str, *, processes: int, clients: int, writers: int, seconds: float = 10.0, each: Any = None
) -> Result:
    """Serve the app from ``processes`` uvicorn servers on ``dsn``: each client logs in
    once; then its ``writers`` write to that one session at the same time, writer ``w``
    through server ``w mod processes``, so concurrent saves of one session come from
    different processes (separate servers rather than ``--workers``: the kernel would pick
    the process). Every write acknowledged must be counted afterwards (``each``: a fixed
    number of writes per writer instead of ``seconds``)."""
    hosts = ["127.0.0.1"] * processes
    return run_writers(dsn, hosts=hosts, users=clients, writers=writers, seconds=seconds, each=each)


def purge_lines(p: dict[str, Any]) -> list[str]:
    server, seen = sorted(b[0] for b in p["batches"]), sorted(b[2] for b in p["batches"])
    sizes, saves = [b[1] for b in p["batches"]], p["saves_s"]
    slowest = ", ".join(f"{t * 1e3:.0f} ms for {n}" for t, n, _ in sorted(p["batches"])[-3:])
    med = [f"median {statistics.median(x) * 1e3:.1f} ms" for x in (server, seen, saves)]
    rate, target = p["removed"] / p["seconds"], p["target_batch_s"] * 1e3
    rows = {
        "removed": f"{p['removed']:,} in {p['seconds']:.1f} s ({rate:,.0f}/s), {len(server)} "
        f"batches (sized to take ~{target:.0f} ms each)",
        "one batch = one transaction, server's clock (the longest its locks are held)": f"{med[0]}"
        f", p99 {percentile(server, 99) * 1e3:.1f} ms, max {server[-1] * 1e3:.1f} ms "
        "(goal: no lock > 50 ms)",
        "one batch as this process saw it": f"{med[1]}, max {seen[-1] * 1e3:.1f} ms",
        "batch sizes": f"median {statistics.median(sizes):.0f}, max {max(sizes)}; "
        f"slowest: {slowest}",
        "saves beside it": f"{len(saves):,}: {med[2]}, max {saves[-1] * 1e3:.1f} ms",
    }
    title = f"### clear_expired of {p['removed']:,} expired sessions, 16 writers saving live ones"
    return [title, "", *table(["figure", "value"], rows.items())]


def report(m: dict[str, Any], s: dict[str, Any]) -> list[str]:
    lines = []
    if "latency" in m:
        lines += ["", f"### Against raw asyncpg, one connection ({s['rounds']} interleaved rounds"]
        lines[-1] += f" x {s['ops']} calls; medians)"
        lines += ["", *ops_table(m["latency"]), "", *goals_table(m["latency"], GOALS)]
    if "concurrency" in m:
        rows = []
        for label, r in m["concurrency"].items():
            errors = ", ".join(f"{n} {e}" for e, n in r["errors"].items()) or "0"
            rows.append([label, f"{r['saves_per_s']:,.0f}", errors, r["lost"]])
        title = f"### 64 concurrent writers x {s['saves']} saves (pool of 16 connections)"
        lines += [
            "",
            title,
            "",
            *table(["writing", "saves/s:", "errors", "lost writes (goal 0):"], rows),
        ]
    if "scale" in m:
        (a, a_cpu), (b, b_cpu) = m["scale"]["loads"].values()
        lines += [
            "",
            f"### A load among {s['sessions']:,} sessions against among 1,000",
            "",
            "Each load picks a random stored key (at 1,000,000 most pages are outside "
            f"shared_buffers). Filling both tables by SQL (3 keys per session): "
            f"{m['scale']['fill_s']:.0f} s.",
            "",
            *ops_table(m["scale"]["loads"], "load"),
            f"| ratio | {a / b:.2f}x | {a_cpu / b_cpu:.2f}x |",
        ]
    if "purge" in m:
        lines += ["", *purge_lines(m["purge"])]
    if "processes" in m:
        r = m["processes"]
        head = ["writes:", "from processes:", "errors:", "lost writes (goal 0):", "idle writers:"]
        row = [f"{r['writes']:,} ({r['per_second']:,.0f}/s)", len(r["pids"]), len(r["errors"])]
        lines += [
            "",
            f"### {s['processes']} uvicorn processes, {s['clients']} sessions x {s['writers']} "
            f"concurrent writers, {s['seconds']:g} s",
            "",
            *table(head, [[*row, r["lost_writes"], r["idle_writers"]]]),
            *(["", *(f"- {error}" for error in r["errors"][:5])] if r["errors"] else []),
        ]
    return lines


def run(ctx: Context, args: argparse.Namespace) -> Section:
    chosen = args.only.split(",") if args.only else list(FIGURES)
    if unknown := set(chosen) - set(FIGURES):
        raise SystemExit(f"--only: no figure {', '.join(sorted(unknown))}; known: {FIGURES}")
    s = {
        name: getattr(args, name)
        for name in "sessions rounds ops saves processes clients writers seconds".split()
    }
    dsn = ctx.services.url(POSTGRES_DURABLE if args.durable else POSTGRES)
    version, fsync = (server_setting(dsn, name) for name in ("server_version", "fsync"))

    async def measure() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with scratch_schema(dsn, "postgres") as scratch:
            for name in chosen:
                log(f"  {name}")
                if name == "latency":
                    out[name] = await against_raw(scratch, s["rounds"], s["ops"])
                elif name == "concurrency":
                    out[name] = await concurrency(scratch, s["saves"])
                elif name == "scale":
                    out[name] = await scale(scratch, s["sessions"], s["rounds"], s["ops"])
                elif name == "purge":
                    out[name] = await purge(scratch, s["sessions"])
                else:  # uvicorn processes, driven from a thread with its own event loop
                    options = {k: s[k] for k in ("processes", "clients", "writers", "seconds")}
                    r = await asyncio.to_thread(processes, scratch, **options)
                    out[name] = vars(r) | {"per_second": r.per_second, "pids": sorted(r.pids)}
        return out

    m = asyncio.run(measure())
    lines = [f"PostgreSQL {version}, fsync {fsync}, loopback TCP.", *report(m, s)]
    return Section(
        TITLE, lines, {"server": {"version": version, "fsync": fsync}, "settings": s, **m}
    )
