"""What events and telemetry cost per request against the plain middleware (MemoryStore,
in-process): wall and CPU time per request, median over interleaved rounds.

Rows: no ``events=``; ``SessionEvents()`` with no handlers; one no-op ``on_event``;
``Telemetry()`` with the ``[otel]`` extra and no SDK (the global providers, never set in
this process), and on explicit no-op providers; on the SDK with an in-memory metric
reader and span exporter, with spans and metrics only (``spans=False``). ``/write``
changes a session (metrics record, no lifecycle event: it is a plain merge); ``/read``
only loads. The span exporter is emptied between cells, outside the clock, as a real
exporter ships its spans away.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
from typing import Any

from starlette.middleware import Middleware

from ..apps import MAX_AGE, SECRET, seed, session_app, session_data
from ..asgi import timed
from ..harness import Context, Section, log, sized, table

TITLE = "Events and telemetry overhead (in-process, MemoryStore), median per request"
VARIANTS = {
    "plain": "no events, no telemetry",
    "plain-again": "the same as plain, a second app: the noise floor",
    "events-empty": "SessionEvents() with no handlers",
    "events-noop": "one no-op on_event handler",
    "otel-nosdk": "Telemetry(), the [otel] extra and no SDK (global providers unset)",
    "otel-noop": "Telemetry() on explicit no-op meter and tracer providers",
    "otel-sdk": "Telemetry() on the SDK: in-memory metric reader and span exporter",
    "otel-sdk-metrics": "Telemetry(spans=False) on the SDK: metrics only",
}
ENDPOINTS = ("read", "write")
BLOCK = 20  # requests a variant makes in a row before another takes its turn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sized(parser, rounds=(15, 3, "interleaved rounds"), per_round=(300, 30, "requests per cell"))


def options(variant: str, exporters: list[Any]) -> dict[str, Any]:
    from asgi_sessions import SessionEvents

    async def noop(event: Any) -> None:
        return None

    if variant.startswith("events"):
        return {"events": SessionEvents(on_event=noop if variant == "events-noop" else None)}
    if not variant.startswith("otel"):
        return {}
    from asgi_sessions.telemetry import Telemetry

    if variant == "otel-nosdk":
        return {"telemetry": Telemetry()}
    if variant == "otel-noop":
        from opentelemetry.metrics import NoOpMeterProvider
        from opentelemetry.trace import NoOpTracerProvider

        providers = {"meter_provider": NoOpMeterProvider(), "tracer_provider": NoOpTracerProvider()}
        return {"telemetry": Telemetry(**providers)}
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporters.append(exporter := InMemorySpanExporter())
    (tracer_provider := TracerProvider()).add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    spans = variant != "otel-sdk-metrics"
    providers = {"meter_provider": meter_provider, "tracer_provider": tracer_provider}
    return {"telemetry": Telemetry(**providers, spans=spans)}


async def one_round(
    apps: dict[str, tuple[Any, bytes]], path: str, n: int, rng: random.Random
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU µs per variant of ``n`` requests each.

    The variants take turns in blocks of ``BLOCK`` requests, in a fresh random order for
    each block: a burst of load from elsewhere on the machine lands on every variant
    alike, each runs warm (no other app's objects in the cache), and none always follows
    the same other one (an SDK row leaves garbage the next request may collect).
    """
    wall: dict[str, list[float]] = {variant: [] for variant in apps}
    cpu: dict[str, list[float]] = {variant: [] for variant in apps}
    order = list(apps)
    for _ in range(max(1, n // BLOCK)):
        rng.shuffle(order)
        for variant in order:
            app, cookie = apps[variant]
            block_wall, block_cpu = await timed(app, path, cookie, min(n, BLOCK))
            wall[variant] += block_wall
            cpu[variant] += block_cpu
    return {v: (statistics.median(wall[v]), statistics.median(cpu[v])) for v in apps}


async def measure(variants: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    from asgi_sessions import MemoryStore, SessionMiddleware

    exporters: list[Any] = []
    apps, stores = {}, []
    for variant in variants:
        stores.append(store := MemoryStore(max_entries=1_000_000))
        extra = options(variant, exporters)
        mw = Middleware(SessionMiddleware, secret_key=SECRET, store=store, max_age=MAX_AGE, **extra)
        app = session_app("ours", [mw], session_data())
        apps[variant] = (app, await seed(app))
    samples: dict[str, list[tuple[float, float]]] = {
        f"{v} {e}": [] for v in variants for e in ENDPOINTS
    }
    rng = random.Random(26)
    for number in range(-1, rounds):  # round -1 warms up
        for endpoint in ENDPOINTS:
            figures = await one_round(apps, f"/{endpoint}", per_round, rng)
            for exporter in exporters:
                exporter.clear()  # outside the clock, as a real exporter ships them
            for variant, figure in figures.items():
                samples[f"{variant} {endpoint}"] += [figure] if number >= 0 else []
        log(f"  round {number + 1}/{rounds}")
    for store in stores:
        await store.aclose()
    cells: dict[str, Any] = {}
    for cell, figures in samples.items():
        plain = samples["plain " + cell.split()[-1]]
        cells[cell] = {}
        for i, clock in enumerate(("wall", "cpu")):
            cells[cell][f"{clock}_us"] = statistics.median(x[i] for x in figures)
            # Paired: this variant's round median over plain's in the same round.
            paired = (x[i] / p[i] - 1 for x, p in zip(figures, plain, strict=True))
            cells[cell][f"{clock}_vs_plain"] = statistics.median(paired)
    return cells


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds, per_round = args.rounds, args.per_round
    variants = list(VARIANTS)
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        variants = [v for v in variants if not v.startswith("otel")]
    log(f"  {len(variants)} variants x {ENDPOINTS}, {rounds} rounds x {per_round} requests")
    figures = asyncio.run(measure(variants, rounds, per_round))
    rows = []
    for endpoint, variant in itertools.product(ENDPOINTS, variants):
        cell = figures[f"{variant} {endpoint}"]
        rows.append([f"{variant}: {VARIANTS[variant]}", f"/{endpoint}", f"{cell['wall_us']:.1f}"])
        rows[-1] += [f"{cell['wall_vs_plain']:+.1%}", f"{cell['cpu_us']:.1f}"]
        rows[-1].append(f"{cell['cpu_vs_plain']:+.1%}")
    lines = [
        f"{rounds} rounds x {per_round} requests per cell, the variants taking turns in blocks "
        f"of {BLOCK} requests in a random order; each figure the median of the round medians, "
        "and each `vs plain` the median over rounds of the variant's round median over "
        "plain's in the same round. CPU is the process's, as in `inprocess`.",
        "",
        *table(["variant", "endpoint", "wall µs", "vs plain", "CPU µs", "vs plain"], rows),
    ]
    return Section(TITLE, lines, {"rounds": rounds, "per_round": per_round, "cells": figures})
