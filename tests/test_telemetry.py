"""OpenTelemetry metrics and spans (the [otel] extra), read with the SDK's in-memory readers.

The names, units and attributes are pinned here: a rename is a visible, deliberate change.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
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
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.telemetry = Telemetry(
            meter_provider=MeterProvider(metric_readers=[self.metrics]),
            tracer_provider=tracer_provider,
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
