"""OpenTelemetry metrics and spans for sessions (the ``[otel]`` extra).

``SessionMiddleware(..., telemetry=Telemetry())`` records, with the global providers or
the ones given:

- one span per store call (``asgi_sessions.load``, ``.create``, ``.save``, ``.rotate``,
  ``.delete``, ``.revoke``, ``.revoke_all``, ``.clear_expired``), a child of the current
  span (the request's, under OpenTelemetry's ASGI instrumentation);
- ``asgi_sessions.store.operation.duration`` (s): each store call, by store and operation,
  with ``error.type`` when it failed (its count is the number of loads, saves, ...);
- ``asgi_sessions.store.errors`` ({error}): store calls that raised;
- ``asgi_sessions.session.write.size`` (By): the encoded bytes each write sent;
- ``asgi_sessions.session.lifecycle`` ({session}): the lifecycle events, by type;
- ``asgi_sessions.request.failures`` ({response}): the 400s (a save interrupted by a
  logout elsewhere), 503s (store unavailable) and 500s (store closed) the middleware sent;
- ``asgi_sessions.renewal.skipped`` ({renewal}): rolling renewals ``renew_interval`` saved.

Attributes are the store kind, the operation, the event type and the status: never a
key, a cookie, an owner or data. Nothing is imported from OpenTelemetry unless this
module is, and the middleware costs nothing more without ``telemetry=``.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from . import __version__
from .errors import MissingDependency
from .events import SessionEvent, store_kind

if TYPE_CHECKING:
    from .stores.base import Store

__all__ = ["METRIC_NAMES", "STORE_OPERATIONS", "Telemetry"]

#: The store calls that get a span and a duration.
STORE_OPERATIONS = (
    "load",
    "create",
    "save",
    "rotate",
    "delete",
    "revoke",
    "revoke_all",
    "clear_expired",
)
_WRITES = frozenset({"create", "save", "rotate"})

#: Every metric this module records (a rename is a deliberate change: tests pin it).
METRIC_NAMES = (
    "asgi_sessions.store.operation.duration",
    "asgi_sessions.store.errors",
    "asgi_sessions.session.write.size",
    "asgi_sessions.session.lifecycle",
    "asgi_sessions.request.failures",
    "asgi_sessions.renewal.skipped",
)

STORE = "asgi_sessions.store"
OPERATION = "db.operation.name"
EVENT = "asgi_sessions.event.type"


class Telemetry:
    """OpenTelemetry metrics and spans: ``SessionMiddleware(..., telemetry=Telemetry())``.

    Args:
        meter_provider, tracer_provider: OpenTelemetry providers; the global ones by
            default (set up by the SDK or an auto-instrumentation agent).
    """

    def __init__(self, *, meter_provider: Any = None, tracer_provider: Any = None) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise MissingDependency("otel", "opentelemetry-api") from None
        self._trace = trace
        meter = metrics.get_meter("asgi_sessions", __version__, meter_provider=meter_provider)
        self._tracer = trace.get_tracer(
            "asgi_sessions", __version__, tracer_provider=tracer_provider
        )
        self._duration = meter.create_histogram(
            METRIC_NAMES[0], unit="s", description="Duration of session store operations."
        )
        self._errors = meter.create_counter(
            METRIC_NAMES[1], unit="{error}", description="Session store operations that failed."
        )
        self._size = meter.create_histogram(
            METRIC_NAMES[2], unit="By", description="Encoded bytes written by a session save."
        )
        self._lifecycle = meter.create_counter(
            METRIC_NAMES[3], unit="{session}", description="Session lifecycle events, by type."
        )
        self._failures = meter.create_counter(
            METRIC_NAMES[4],
            unit="{response}",
            description="Responses the session middleware answered instead of the app's.",
        )
        self._skipped = meter.create_counter(
            METRIC_NAMES[5],
            unit="{renewal}",
            description="Rolling-expiry renewals skipped because renew_interval had not passed.",
        )

    def instrument(self, store: Store) -> None:
        """Wrap ``store``'s operations (on this instance only) with spans and durations."""
        if getattr(store, "_telemetry_instrumented", False):
            return
        kind = store_kind(store)
        for name in STORE_OPERATIONS:
            setattr(store, name, self._wrap(getattr(store, name), name, kind))
        store._telemetry_instrumented = True  # type: ignore[attr-defined]

    def _wrap(self, method: Any, operation: str, kind: str) -> Any:
        attributes = {STORE: kind, OPERATION: operation}
        tracer, duration, errors, size = self._tracer, self._duration, self._errors, self._size
        span_name = f"asgi_sessions.{operation}"
        client = self._trace.SpanKind.CLIENT

        @functools.wraps(method)
        async def call(*args: Any, **kw: Any) -> Any:
            if operation in _WRITES and args:
                change = args[-1]
                size.record(
                    sum(len(k.encode()) + len(v.encode()) for k, v in change.set.items()),
                    {STORE: kind},
                )
            started = time.perf_counter()
            with tracer.start_as_current_span(span_name, kind=client, attributes=attributes):
                try:
                    result = await method(*args, **kw)
                except Exception as exc:
                    failed = {**attributes, "error.type": type(exc).__name__}
                    duration.record(time.perf_counter() - started, failed)
                    errors.add(1, failed)
                    raise
            duration.record(time.perf_counter() - started, attributes)
            return result

        return call

    async def record(self, event: SessionEvent) -> None:
        """Count a lifecycle event (the middleware calls it for every event)."""
        self._lifecycle.add(event.count, {STORE: event.store, EVENT: event.type})

    def failed(self, store: Store, status: int, exc: Exception) -> None:
        """Count a 400, 503 or 500 the middleware answered."""
        self._failures.add(
            1,
            {
                STORE: store_kind(store),
                "http.response.status_code": status,
                "error.type": type(exc).__name__,
            },
        )

    def renewal_skipped(self, store: Store) -> None:
        """Count a rolling renewal that ``renew_interval`` saved."""
        self._skipped.add(1, {STORE: store_kind(store)})
