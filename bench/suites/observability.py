"""What events and telemetry cost per request against the plain middleware (MemoryStore,
in-process): wall and CPU time per request, median over interleaved rounds.

Rows: no ``events=``; ``SessionEvents()`` with no handlers; one no-op ``on_event``;
``Telemetry()`` on OpenTelemetry's no-op providers (the ``[otel]`` extra, no SDK); and on
the SDK with an in-memory metric reader and span exporter. ``/write`` creates or changes
a session (events fire, metrics record); ``/read`` only loads.
"""

from __future__ import annotations

import argparse
import asyncio
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
    "events-empty": "SessionEvents() with no handlers",
    "events-noop": "one no-op on_event handler",
    "otel-noop": "Telemetry() on no-op meter and tracer providers (no SDK)",
    "otel-sdk": "Telemetry() on the SDK: in-memory metric reader and span exporter",
}
ENDPOINTS = ("read", "write")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 15; quick 3)")
    parser.add_argument("--per-round", type=int, help="requests per cell per round (300; 30)")


def _options(variant: str) -> dict[str, Any]:
    from asgi_sessions import SessionEvents

    async def noop(event: Any) -> None:
        return None

    if variant == "events-empty":
        return {"events": SessionEvents()}
    if variant == "events-noop":
        return {"events": SessionEvents(on_event=noop)}
    if variant.startswith("otel"):
        from asgi_sessions.telemetry import Telemetry

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

        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
        meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        return {
            "telemetry": Telemetry(meter_provider=meter_provider, tracer_provider=tracer_provider)
        }
    return {}


async def _build(variant: str) -> tuple[Any, bytes, Any]:
    from asgi_sessions import MemoryStore, SessionMiddleware

    store = MemoryStore(max_entries=1_000_000)
    mw = [
        Middleware(
            SessionMiddleware, secret_key=SECRET, store=store, max_age=MAX_AGE, **_options(variant)
        )
    ]
    app = session_app("ours", mw, session_data())
    return app, await _seed(app), store


async def _timed(app: Any, path: str, cookie: bytes, n: int) -> tuple[float, float]:
    """Median wall and CPU (this thread) microseconds of ``n`` sequential requests."""
    request_headers = headers(cookie)

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"{path} answered {message['status']}")

    wall, cpu = [], []
    for _ in range(n):
        request = scope(path, request_headers)
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        await app(request, receive, send)
        c1, w1 = time.thread_time_ns(), time.perf_counter_ns()
        wall.append((w1 - w0) / 1000)
        cpu.append((c1 - c0) / 1000)
    return statistics.median(wall), statistics.median(cpu)


async def measure(variants: list[str], rounds: int, per_round: int) -> dict[str, Any]:
    built = {v: await _build(v) for v in variants}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {
        (v, e): [] for v in variants for e in ENDPOINTS
    }
    try:
        for number in range(-1, rounds):  # round -1 warms up
            # Each round starts at a different variant: no cell always runs first.
            shift = (number + 1) % len(variants)
            for endpoint in ENDPOINTS:
                for variant in variants[shift:] + variants[:shift]:
                    app, cookie, _ = built[variant]
                    figure = await _timed(app, f"/{endpoint}", cookie, per_round)
                    if number >= 0:
                        samples[variant, endpoint].append(figure)
            if number >= 0:
                log(f"  round {number + 1}/{rounds}")
    finally:
        for _, _, store in built.values():
            await store.aclose()
    return {
        f"{v} {e}": {
            "wall_us": statistics.median(w for w, _ in figures),
            "cpu_us": statistics.median(c for _, c in figures),
        }
        for (v, e), figures in samples.items()
    }


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
        f"{rounds} interleaved rounds x {per_round} sequential requests per cell; each figure "
        "the median of the round medians. CPU is `time.thread_time_ns()` around the call.",
        "",
        "| variant | endpoint | wall µs | vs plain | CPU µs | vs plain |",
        "|---|---|---|---|---|---|",
    ]
    for endpoint in ENDPOINTS:
        base = figures[f"plain {endpoint}"]
        for variant in variants:
            cell = figures[f"{variant} {endpoint}"]
            lines.append(
                f"| {variant}: {VARIANTS[variant]} | /{endpoint} | {cell['wall_us']:.1f} | "
                f"{cell['wall_us'] / base['wall_us'] - 1:+.1%} | {cell['cpu_us']:.1f} | "
                f"{cell['cpu_us'] / base['cpu_us'] - 1:+.1%} |"
            )
    return Section(TITLE, lines, {"rounds": rounds, "per_round": per_round, "cells": figures})
