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
import random
import statistics
import time
from typing import Any

from starlette.middleware import Middleware

from ..apps import MAX_AGE, SECRET, _seed, session_app, session_data
from ..asgi import headers, receive, scope
from ..harness import Context, Section, log

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; quick 3)")
    parser.add_argument("--per-round", type=int, help="requests per cell per round (300; 30)")


def _options(variant: str, exporters: list[Any]) -> dict[str, Any]:
    from asgi_sessions import SessionEvents

    async def noop(event: Any) -> None:
        return None

    if variant == "events-empty":
        return {"events": SessionEvents()}
    if variant == "events-noop":
        return {"events": SessionEvents(on_event=noop)}
    if variant.startswith("otel"):
        from asgi_sessions.telemetry import Telemetry

        if variant == "otel-nosdk":
            return {"telemetry": Telemetry()}
        if variant == "otel-noop":
            from opentelemetry.metrics import NoOpMeterProvider
            from opentelemetry.trace import NoOpTracerProvider

            return {
                "telemetry": Telemetry(
                    meter_provider=NoOpMeterProvider(), tracer_provider=NoOpTracerProvider()
                )
            }
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        exporters.append(exporter)
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        return {
            "telemetry": Telemetry(
                meter_provider=meter_provider,
                tracer_provider=tracer_provider,
                spans=variant != "otel-sdk-metrics",
            )
        }
    return {}


async def _build(variant: str, exporters: list[Any]) -> tuple[Any, bytes, Any]:
    from asgi_sessions import MemoryStore, SessionMiddleware

    store = MemoryStore(max_entries=1_000_000)
    options = _options(variant, exporters)
    mw = [Middleware(SessionMiddleware, secret_key=SECRET, store=store, max_age=MAX_AGE, **options)]
    app = session_app("ours", mw, session_data())
    return app, await _seed(app), store


BLOCK = 20  # requests a variant makes in a row before another takes its turn


async def _round(
    apps: dict[str, tuple[Any, bytes]], path: str, n: int, rng: random.Random
) -> dict[str, tuple[float, float]]:
    """Median wall and CPU (this thread) µs per variant of ``n`` requests each.

    The variants take turns in blocks of ``BLOCK`` requests, in a fresh random order for
    each block: a burst of load from elsewhere on the machine lands on every variant
    alike, each runs warm (no other app's objects in the cache), and none always follows
    the same other one (an SDK row leaves garbage the next request may collect).
    """

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{path} answered {message['status']}")

    request_headers = {variant: headers(cookie) for variant, (_, cookie) in apps.items()}
    wall: dict[str, list[float]] = {variant: [] for variant in apps}
    cpu: dict[str, list[float]] = {variant: [] for variant in apps}
    order = list(apps)
    for _ in range(max(1, n // BLOCK)):
        rng.shuffle(order)
        for variant in order:
            app = apps[variant][0]
            for _ in range(min(n, BLOCK)):
                request = scope(path, request_headers[variant])
                w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                await app(request, receive, send)
                c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
                wall[variant].append((w1 - w0) / 1000)
                cpu[variant].append((c1 - c0) / 1000)
    return {v: (statistics.median(wall[v]), statistics.median(cpu[v])) for v in apps}


async def measure(variants: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    exporters: list[Any] = []
    built = {v: await _build(v, exporters) for v in variants}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {
        (v, e): [] for v in variants for e in ENDPOINTS
    }
    apps = {v: (app, cookie) for v, (app, cookie, _) in built.items()}
    rng = random.Random(26)
    try:
        for number in range(-1, rounds):  # round -1 warms up
            for endpoint in ENDPOINTS:
                figures = await _round(apps, f"/{endpoint}", per_round, rng)
                for exporter in exporters:
                    exporter.clear()  # outside the clock, as a real exporter ships them
                if number >= 0:
                    for variant, figure in figures.items():
                        samples[variant, endpoint].append(figure)
            if number >= 0:
                log(f"  round {number + 1}/{rounds}")
    finally:
        for _, _, store in built.values():
            await store.aclose()
    cells: dict[str, Any] = {}
    for (v, e), figures in samples.items():
        plain = samples["plain", e]
        cells[f"{v} {e}"] = {
            "wall_us": statistics.median(w for w, _ in figures),
            "cpu_us": statistics.median(c for _, c in figures),
            # Paired: this variant's round median over plain's in the same round.
            "wall_vs_plain": statistics.median(
                w / pw - 1 for (w, _), (pw, _) in zip(figures, plain, strict=True)
            ),
            "cpu_vs_plain": statistics.median(
                c / pc - 1 for (_, c), (_, pc) in zip(figures, plain, strict=True)
            ),
        }
    return cells


def run(ctx: Context, args: argparse.Namespace) -> Section:
    rounds = args.rounds or (3 if ctx.quick else 15)
    per_round = args.per_round or (30 if ctx.quick else 300)
    variants = list(VARIANTS)
    try:
        import opentelemetry.sdk  # noqa: F401
    except ImportError:
        variants = [v for v in variants if not v.startswith("otel")]
    log(f"  {len(variants)} variants x {ENDPOINTS}, {rounds} rounds x {per_round} requests")
    figures = asyncio.run(measure(variants, rounds, per_round))
    lines = [
        f"{rounds} rounds x {per_round} requests per cell, the variants taking turns in blocks "
        f"of {BLOCK} requests in a random order; each figure the median of the round medians, "
        "and each `vs plain` the "
        "median over rounds of the variant's round median over plain's in the same round. "
        "CPU is `time.thread_time_ns()` around the call.",
        "",
        "| variant | endpoint | wall µs | vs plain | CPU µs | vs plain |",
        "|---|---|---|---|---|---|",
    ]
    for endpoint in ENDPOINTS:
        for variant in variants:
            cell = figures[f"{variant} {endpoint}"]
            lines.append(
                f"| {variant}: {VARIANTS[variant]} | /{endpoint} | {cell['wall_us']:.1f} | "
                f"{cell['wall_vs_plain']:+.1%} | {cell['cpu_us']:.1f} | "
                f"{cell['cpu_vs_plain']:+.1%} |"
            )
    return Section(TITLE, lines, {"rounds": rounds, "per_round": per_round, "cells": figures})
