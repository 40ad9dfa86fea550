"""OpenTelemetry metrics and spans (the [otel] extra), read with the SDK's in-memory readers.

The names, units and attributes are pinned here: a rename is a visible, deliberate change.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.requests import Request

from asgi_sessions import MemoryStore, Session, SessionStoreError, Store
from asgi_sessions.cookies import Signer
from asgi_sessions.events import store_kind
from asgi_sessions.telemetry import METRIC_NAMES, Telemetry
from tests.clock import FakeClock
from tests.support import SECRET, app_with, client_for, session_write

#: name -> (unit, the attribute keys of its data points)
PINNED = {
    "asgi_sessions.store.operation.duration": ("s", {"asgi_sessions.store", "db.operation.name"}),
    "asgi_sessions.store.errors": (
        "{error}",
        {"asgi_sessions.store", "db.operation.name", "error.type"},
    ),
    "asgi_sessions.session.write.size": ("By", {"asgi_sessions.store"}),
    "asgi_sessions.session.lifecycle": (
        "{session}",
        {"asgi_sessions.store", "asgi_sessions.event.type"},
    ),
    "asgi_sessions.request.failures": (
        "{response}",
        {"asgi_sessions.store", "http.response.status_code", "error.type"},
    ),
    "asgi_sessions.renewal.skipped": ("{renewal}", {"asgi_sessions.store"}),
}
SPANS = {
    "asgi_sessions.load",
    "asgi_sessions.create",
    "asgi_sessions.save",
    "asgi_sessions.rotate",
    "asgi_sessions.delete",
    "asgi_sessions.revoke",
    "asgi_sessions.revoke_all",
    "asgi_sessions.clear_expired",
}


class Readers:
    def __init__(self) -> None:
        self.metrics = InMemoryMetricReader()
        self.spans = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(
            meter_provider=MeterProvider(metric_readers=[self.metrics]),
            tracer_provider=self.tracer_provider,
        )

    def points(self) -> dict[str, list[tuple[str, dict[str, Any], Any]]]:
        """metric name -> [(unit, attributes, value or histogram count)]."""
        found: dict[str, list[tuple[str, dict[str, Any], Any]]] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # a histogram: how many recorded
                        found.setdefault(metric.name, []).append(
                            (metric.unit, dict(point.attributes or {}), value)
                        )
        return found


@pytest.fixture
def readers() -> Iterator[Readers]:
    yield Readers()


async def sign_in(session: Session, request: Request) -> Any:
    session["user"] = "ada"
    session.owner = "ada"
    return {}


async def logout(session: Session, request: Request) -> Any:
    await session.flush()
    return {}


async def read(session: Session, request: Request) -> Any:
    return dict(session)


async def test_metric_and_span_names_units_and_attributes_are_exactly_these(
    store: Store, readers: Readers, clock: FakeClock
) -> None:
    assert set(METRIC_NAMES) == set(PINNED)
    handlers = {"in": sign_in, "out": logout, "read": read}
    application = app_with(
        store,
        handlers,
        telemetry=readers.telemetry,
        save_every_request=True,
        renew_interval=60,
    )
    async with client_for(application) as client:
        await client.post("/in")  # create, then (owner set at creation) no rotation
        await client.post("/read")  # a renewal not due yet: skipped
        await client.post("/out")  # flush: delete
        await client.post("/in")
    kind = store_kind(store)
    owner_ids = await store.list_sessions("ada")
    await store.revoke("ada", owner_ids[0].public_id)
    await store.revoke_all("ada")
    await store.clear_expired()
    points = readers.points()
    assert set(points) <= set(PINNED)
    for name, rows in points.items():
        unit, keys = PINNED[name]
        for seen_unit, attributes, _ in rows:
            assert seen_unit == unit, name
            assert set(attributes) <= keys, (name, attributes)
            assert attributes["asgi_sessions.store"] == kind
    operations = {
        row[1]["db.operation.name"] for row in points["asgi_sessions.store.operation.duration"]
    }
    assert {"load", "create", "delete", "revoke", "revoke_all", "clear_expired"} <= operations
    lifecycle = {
        row[1]["asgi_sessions.event.type"]: row[2]
        for row in points["asgi_sessions.session.lifecycle"]
    }
    assert lifecycle["created"] == 2
    assert lifecycle["owner_changed"] == 2
    assert lifecycle["flushed"] == 1
    assert lifecycle["revoked"] == 1  # revoke ended one; revoke_all found none left
    assert [row[2] for row in points["asgi_sessions.renewal.skipped"]] == [1]
    assert all(row[2] >= 1 for row in points["asgi_sessions.session.write.size"])
    spans = readers.spans.get_finished_spans()
    assert {span.name for span in spans} <= SPANS
    assert {"asgi_sessions.load", "asgi_sessions.create", "asgi_sessions.delete"} <= {
        span.name for span in spans
    }
    for span in spans:
        attributes = dict(span.attributes or {})
        assert set(attributes) == {"asgi_sessions.store", "db.operation.name"}
        assert span.name == "asgi_sessions." + str(attributes["db.operation.name"])


class FlakyStore(MemoryStore):
    """Loads fail (a store outage)."""

    async def read(self, store_id: str) -> Any:
        raise SessionStoreError("the store is down")


async def test_store_errors_and_503s_are_counted_with_the_error_type(readers: Readers) -> None:
    store = FlakyStore()
    cookie = await MemoryStore().create(session_write(0, set={"a": "1"}, create=True))
    application = app_with(store, {"read": read}, telemetry=readers.telemetry)
    async with client_for(application) as client:
        client.cookies.set(
            "session",
            store.encode_cookie(cookie.key, Signer([SECRET], salt="asgi_sessions.cookie")),
        )
        assert (await client.post("/read")).status_code == 503
    points = readers.points()
    assert points["asgi_sessions.store.errors"] == [
        (
            "{error}",
            {
                "asgi_sessions.store": "flaky",
                "db.operation.name": "load",
                "error.type": "SessionStoreError",
            },
            1,
        )
    ]
    assert points["asgi_sessions.request.failures"] == [
        (
            "{response}",
            {
                "asgi_sessions.store": "flaky",
                "http.response.status_code": 503,
                "error.type": "SessionStoreError",
            },
            1,
        )
    ]
    (span,) = readers.spans.get_finished_spans()
    assert span.name == "asgi_sessions.load"
    assert span.status.status_code.name == "ERROR"


async def test_store_spans_are_children_of_the_current_span(readers: Readers) -> None:
    store = MemoryStore()
    application = app_with(store, {"in": sign_in}, telemetry=readers.telemetry)
    tracer = readers.tracer_provider.get_tracer("app")
    async with client_for(application) as client:
        with tracer.start_as_current_span("request") as request_span:
            await client.post("/in")
    span, request = readers.spans.get_finished_spans()  # a create (nothing to load)
    assert (span.name, request.name) == ("asgi_sessions.create", "request")
    assert span.parent is not None
    assert span.parent.span_id == request_span.get_span_context().span_id


class CallingOut(MemoryStore):
    """A store whose reads call something else (a driver, with spans of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.current: list[Any] = []

    async def read(self, store_id: str) -> Any:
        from opentelemetry import trace

        self.current.append(trace.get_current_span())
        return await super().read(store_id)


async def test_a_driver_s_spans_nest_under_the_store_call_s_span(readers: Readers) -> None:
    store = CallingOut()
    application = app_with(store, {"in": sign_in}, telemetry=readers.telemetry)
    async with client_for(application) as client:
        await client.post("/in")
        await client.post("/in")  # loads
    (load,) = [s for s in readers.spans.get_finished_spans() if s.name == "asgi_sessions.load"]
    assert [span.get_span_context() for span in store.current] == [load.get_span_context()]


async def test_metrics_without_spans(store: Store) -> None:
    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    telemetry = Telemetry(
        meter_provider=MeterProvider(metric_readers=[reader]),
        tracer_provider=tracer_provider,
        spans=False,
    )
    async with client_for(app_with(store, {"in": sign_in}, telemetry=telemetry)) as client:
        await client.post("/in")
        await client.post("/in")
    assert exporter.get_finished_spans() == ()
    data = reader.get_metrics_data()
    names = {m.name for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics}
    assert {METRIC_NAMES[0], METRIC_NAMES[2], METRIC_NAMES[3]} <= names


async def test_on_no_op_providers_the_store_is_left_unwrapped_and_nothing_observes(
    store: Store,
) -> None:
    from opentelemetry.metrics import NoOpMeterProvider
    from opentelemetry.trace import NoOpTracerProvider

    telemetry = Telemetry(meter_provider=NoOpMeterProvider(), tracer_provider=NoOpTracerProvider())
    seen: list[Session] = []

    async def keep(session: Session, request: Request) -> Any:
        seen.append(session)
        session["user"] = "ada"
        return {}

    async with client_for(app_with(store, {"keep": keep}, telemetry=telemetry)) as client:
        assert (await client.post("/keep")).status_code == 200
    assert "save" not in vars(store)  # the class's own methods: no wrapper per call
    assert seen[0]._observer is None


# A process of its own: OpenTelemetry's global providers can be set only once.
LATE_SDK = """
import asyncio, json
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from asgi_sessions import MemoryStore
from asgi_sessions.telemetry import Telemetry
from tests.support import app_with, client_for

observers = []

async def sign_in(session, request):
    observers.append(session._observer is not None)
    session["user"] = "ada"
    session.owner = "ada"
    return {}

async def main():
    store = MemoryStore()
    app = app_with(store, {"in": sign_in}, telemetry=Telemetry())  # built before the SDK
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    async with client_for(app) as client:
        await client.post("/in")  # no SDK yet (and Starlette builds the middleware now)
        wrapped = [sorted(n for n in ("load", "save", "clear_expired") if n in vars(store))]
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        await store.clear_expired()  # outside any request
        client.cookies.clear()
        with trace.get_tracer("app").start_as_current_span("request") as parent:
            await client.post("/in")
    data = reader.get_metrics_data()
    points = {
        m.name: [dict(p.attributes) for p in m.data.data_points]
        for r in data.resource_metrics for s in r.scope_metrics for m in s.metrics
    }
    parent_id = parent.get_span_context().span_id
    wrapped.append(sorted(n for n in ("load", "save", "clear_expired") if n in vars(store)))
    print(json.dumps({
        "wrapped": wrapped,
        "observers": observers,
        "spans": [[s.name, s.parent is not None and s.parent.span_id == parent_id]
                  for s in spans.get_finished_spans()],
        "metrics": points,
    }))

asyncio.run(main())
"""


def test_a_global_sdk_set_up_after_the_app_was_built_is_picked_up() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", LATE_SDK], capture_output=True, text=True, check=True, cwd=root
    ).stdout
    found = json.loads(out)
    # Before the SDK, a request's calls are not wrapped and it builds no Observer; a call
    # jobs make outside requests is, and checks for an SDK itself.
    assert found["wrapped"] == [["clear_expired"], ["clear_expired", "load", "save"]]
    assert found["observers"] == [False, True]
    # clear_expired's, then only the second request's: a create, a child of its span.
    assert found["spans"] == [
        ["asgi_sessions.clear_expired", False],
        ["asgi_sessions.create", True],
        ["request", False],
    ]
    metrics = found["metrics"]
    assert metrics["asgi_sessions.store.operation.duration"] == [
        {"asgi_sessions.store": "memory", "db.operation.name": "clear_expired"},
        {"asgi_sessions.store": "memory", "db.operation.name": "create"},
    ]
    assert metrics["asgi_sessions.session.lifecycle"] == [
        {"asgi_sessions.store": "memory", "asgi_sessions.event.type": "created"},
        {"asgi_sessions.store": "memory", "asgi_sessions.event.type": "owner_changed"},
    ]


def test_importing_the_package_does_not_import_opentelemetry() -> None:
    code = "import sys, asgi_sessions; print('opentelemetry' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_telemetry_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asgi_sessions import MissingDependency

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(MissingDependency, match=r"\[otel\]"):
        Telemetry()


def _fresh_demo(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """demo_app imported anew, its sessions in ``tmp_path`` (it builds its store on import)."""
    import importlib

    monkeypatch.setenv("DEMO_SESSIONS_DB", str(tmp_path / "demo.sqlite3"))
    monkeypatch.delitem(sys.modules, "demo_app", raising=False)
    return importlib.import_module("demo_app")


async def test_the_demo_metrics_page_summarises_what_the_session_layer_recorded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    demo = _fresh_demo(monkeypatch, tmp_path)
    assert demo.METRICS is not None  # the dev environment has the extra and the SDK
    try:
        async with client_for(demo.app) as client:
            await client.get("/")  # creates a session (its CSRF token)
            await client.get("/")  # loads it
            page = (await client.get("/metrics-demo")).text
    finally:
        await demo.store.aclose()
    assert "<h1>Session metrics</h1>" in page
    for row in ("store.operation.duration", "operation=load", "operation=create", "event=created"):
        assert row in page, row
    assert "key" not in page.partition("id='metrics'")[2].partition("</table>")[0].lower()


async def test_the_demo_runs_without_opentelemetry_and_says_how_to_see_metrics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    for name in [n for n in sys.modules if n.startswith("opentelemetry")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import fails, as uninstalled
    monkeypatch.delitem(sys.modules, "asgi_sessions.telemetry", raising=False)
    demo = _fresh_demo(monkeypatch, tmp_path)
    assert demo.METRICS is None
    try:
        async with client_for(demo.app) as client:
            assert (await client.get("/")).status_code == 200
            page = await client.get("/metrics-demo")
    finally:
        await demo.store.aclose()
    assert page.status_code == 200
    assert "pip install '.[otel]' opentelemetry-sdk" in page.text
    assert not [n for n in sys.modules if n.startswith("opentelemetry.")]
