"""OpenTelemetry metrics and spans for sessions (the ``[otel]`` extra).

``SessionMiddleware(..., telemetry=Telemetry())`` records, with the global providers or
the ones given:

- one span per store call (``asgi_sessions.load``, ``.create``, ``.save``, ``.rotate``,
  ``.delete``, ``.revoke``, ``.revoke_all``, ``.clear_expired``), a child of the current
  span (the request's, under OpenTelemetry's ASGI instrumentation), and current while a
  store that calls out works (a driver's spans nest under it);
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
module is, and the middleware costs nothing more without ``telemetry=``. Until an SDK is
set up, a request costs one check: the store calls it makes are not even wrapped.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import MissingDependency
from .events import SessionEvent, store_kind

if TYPE_CHECKING:
    from .stores.base import SessionWrite, Store

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
# A request's calls: wrapped only once something records. Until then a request costs
# one check (SessionEvents.listening, each request), not a wrapper per call: the other
# calls, which jobs make outside requests too, keep theirs and check on each call.
_PER_REQUEST = ("load", "create", "save", "rotate")

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
            default, set up by the SDK or an agent before or after the middleware is
            built (the next request then records; a store call outside requests too).
        spans: ``False``: metrics only, no span per store call (spans are more than
            half the cost on the SDK, see the README).
    """

    def __init__(
        self, *, meter_provider: Any = None, tracer_provider: Any = None, spans: bool = True
    ) -> None:
        try:
            from opentelemetry import context, metrics, trace
        except ImportError:
            raise MissingDependency("otel", "opentelemetry-api") from None
        self._trace, self._metrics = trace, metrics
        # Where the API keeps the global meter provider (see _unset).
        self._metrics_state = getattr(metrics, "_internal", None)
        self._attach, self._detach = context.attach, context.detach
        self._spans = spans
        # Given the global provider itself (proxy or not): it is the global one.
        self._own_tracer_provider = (
            None if tracer_provider is trace.get_tracer_provider() else tracer_provider
        )
        self._own_meter_provider = (
            None if meter_provider is metrics.get_meter_provider() else meter_provider
        )
        meter = metrics.get_meter("asgi_sessions", __version__, meter_provider=meter_provider)
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
        # On a global provider not set yet, the instruments are proxies that start
        # recording once it is set; _resolve() looks for that while _pending.
        self._tracer: Any = None  # a tracer that records; None: no spans
        self._metering = self._pending = False
        # The API modules whose global provider this waits for, else _NotWaiting.
        self._tracing_waits: Any = _NotWaiting
        self._metering_waits: Any = _NotWaiting
        self._stores: list[weakref.ref[Store]] = []  # their per-request calls not wrapped yet
        self._resolve()

    def _resolve(self) -> None:
        """Find out whether spans and metrics record now, and which globals to watch."""
        trace, metrics = self._trace, self._metrics
        tracer = None
        self._tracing_waits = self._metering_waits = _NotWaiting
        if self._spans:
            provider = self._own_tracer_provider
            if provider is None and _unset(trace, "_TRACER_PROVIDER"):
                self._tracing_waits = trace
            else:
                tracer = (provider or trace.get_tracer_provider()).get_tracer(
                    "asgi_sessions", __version__
                )
                if isinstance(tracer, trace.NoOpTracer):  # no-op, or the SDK disabled
                    tracer = None
        provider = self._own_meter_provider
        metering = False
        if provider is None and _unset(self._metrics_state, "_METER_PROVIDER"):
            self._metering_waits = self._metrics_state
        else:
            meter = (provider or metrics.get_meter_provider()).get_meter(
                "asgi_sessions", __version__
            )
            metering = not isinstance(meter, metrics.NoOpMeter)
        self._tracer, self._metering = tracer, metering
        self._pending = (
            self._tracing_waits is not _NotWaiting or self._metering_waits is not _NotWaiting
        )
        if metering or tracer is not None:
            for ref in self._stores:
                store = ref()
                if store is not None:
                    self._wrap_all(store, _PER_REQUEST)
            self._stores.clear()

    def metering(self) -> bool:
        """Whether metrics record now (the lifecycle counter wants events only then)."""
        if self._pending and (
            self._tracing_waits._TRACER_PROVIDER is not None
            or self._metering_waits._METER_PROVIDER is not None
        ):
            self._resolve()
        return self._metering

    def instrument(self, store: Store) -> None:
        """Wrap ``store``'s operations (on this instance only) with spans and durations."""
        if getattr(store, "_telemetry_instrumented", False):
            return
        store._telemetry_instrumented = True  # type: ignore[attr-defined]
        if self._metering or self._tracer is not None:
            self._wrap_all(store, STORE_OPERATIONS)
        elif self._pending:
            self._wrap_all(store, [op for op in STORE_OPERATIONS if op not in _PER_REQUEST])
            self._stores.append(weakref.ref(store))  # _resolve() wraps the rest later
        # Else no-op providers, or the SDK disabled: nothing will ever record.

    def _wrap_all(self, store: Store, operations: Sequence[str]) -> None:
        from .stores.cookie import CookieStore
        from .stores.memory import MemoryStore

        kind = store_kind(store)
        # A store that does its work in this process (not a subclass, which may call out)
        # makes no calls whose spans could nest under its own: no need to make it current.
        current = type(store) not in (MemoryStore, CookieStore)
        for name in operations:
            setattr(store, name, self._wrap(getattr(store, name), name, kind, current))

    def _wrap(self, method: Any, operation: str, kind: str, current: bool) -> Any:
        attributes = {STORE: kind, OPERATION: operation}
        store_only = {STORE: kind}
        duration, errors, size = self._duration, self._errors, self._size
        span_name = f"asgi_sessions.{operation}"
        client = self._trace.SpanKind.CLIENT
        in_context = self._trace.set_span_in_context
        attach, detach = self._attach, self._detach
        status, error = self._trace.Status, self._trace.StatusCode.ERROR
        write = operation in _WRITES
        clock = time.perf_counter

        async def recorded(tracer: Any, metering: bool, args: Any, kw: Any) -> Any:
            if metering and write and args:
                size.record(_write_size(args[-1]), store_only)
            span: Any = None
            token: Any = None
            if tracer is not None:
                # A child of the request's span; current while a store that calls out
                # works, so that a driver's own spans (Redis, PostgreSQL) nest under it.
                span = tracer.start_span(span_name, kind=client, attributes=attributes)
                if current:
                    token = attach(in_context(span))
            started = clock()
            try:
                result = await method(*args, **kw)
            except Exception as exc:
                elapsed = clock() - started
                if span is not None:
                    span.record_exception(exc)
                    span.set_status(status(error, f"{type(exc).__name__}: {exc}"))
                if metering:
                    failed = {**attributes, "error.type": type(exc).__name__}
                    duration.record(elapsed, failed)
                    errors.add(1, failed)
                raise
            finally:
                if span is not None:
                    if token is not None:
                        detach(token)
                    span.end()
            if metering:
                duration.record(clock() - started, attributes)
            return result

        # Not a coroutine function: with nothing to record, the store's own coroutine
        # is handed back as it is, without a frame of ours around each await.
        @functools.wraps(method)
        def call(*args: Any, **kw: Any) -> Any:
            if self._pending and (  # a global provider set since: one lookup each
                self._tracing_waits._TRACER_PROVIDER is not None
                or self._metering_waits._METER_PROVIDER is not None
            ):
                self._resolve()
            tracer, metering = self._tracer, self._metering
            if tracer is None and not metering:
                return method(*args, **kw)
            return recorded(tracer, metering, args, kw)

        return call

    async def record(self, event: SessionEvent) -> None:
        """Count a lifecycle event (the middleware calls it for every event)."""
        if self.metering():
            self._lifecycle.add(event.count, {STORE: event.store, EVENT: event.type})

    def failed(self, store: Store, status: int, exc: Exception) -> None:
        """Count a 400, 503 or 500 the middleware answered."""
        if self.metering():
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
        if self.metering():
            self._skipped.add(1, {STORE: store_kind(store)})


def _unset(module: Any, name: str) -> bool:
    """Whether OpenTelemetry's global provider ``module.name`` is still unset.

    Reads the API's own global (one attribute lookup, where the public getter looks in
    ``os.environ`` on every call). Were it renamed, the answer is "set", and the proxy
    tracer and instruments are used as they are: correct, only slower.
    """
    return getattr(module, name, True) is None


class _NotWaiting:
    """Stands in for an API module whose global provider this does not wait for."""

    _TRACER_PROVIDER = _METER_PROVIDER = None


def _write_size(change: SessionWrite) -> int:
    """The UTF-8 bytes of the keys and encoded values a write sends."""
    size = 0
    for key, value in change.set.items():
        size += len(key) if key.isascii() else len(key.encode())
        size += len(value) if value.isascii() else len(value.encode())
    return size
