"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``; ``none``
keeps it off) or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), and ``OTEL_SDK_DISABLED`` is not ``true``. The SDK
and the OTLP/HTTP exporter are the optional extra ``dbpool[otel]``; asked for without it, the
service says so in its log at start and runs untraced. Everything else (sampler, batch sizes,
endpoint, headers, resource attributes) is the SDK's own reading of ``OTEL_*``.

The spans, each trace::

    POST /api/external-db-connections/{connection_id}/query    SERVER, one per HTTP request
    ├── pool wait    waiting for a free slot of the pool (fair FIFO gate)
    ├── connect      checking a connection out (opening one when none is idle)
    ├── query        the statement(s): ``dbpool.statement.kind`` from the analyser
    └── reset        the connection's clean-up on its way back to the pool

Pool spans carry ``db.system``, ``db.namespace`` (the database name), ``dbpool.connection.id``
and ``db.client.connection.pool.name``; a failure sets the span's status and ``error.type``
(our error code, or the driver's exception class; a 5xx answer's status on the request's
span). Never an SQL text, a parameter value, a password, a user or host name, and
no exception messages (a database's message can quote a value). A caller's W3C
``traceparent`` makes the request's span a child of the caller's trace, and log lines written
during a traced request carry its ``trace_id``.

Tracing off costs the request path nothing but the no-op methods of :class:`Tracing` (the
HTTP middleware is not even installed). Pool spans are only made inside a traced request:
background work (health checks, the breaker's own probes) makes no root spans.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from app import __version__
from app.domain import ConnectionConfig
from app.logs import request_id_var, trace_id_var
from app.sql import analyse

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanKind, Tracer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["NO_TRACING", "OtelTracing", "Tracing", "tracing_from_env"]

log = logging.getLogger(__name__)

_NULL: AbstractContextManager[None] = nullcontext()
_EXTRA_MISSING = (
    "tracing was requested by OTEL_* variables but the OpenTelemetry SDK is not installed; "
    "install the extra (pip install 'dbpool[otel]') to send traces. Running without traces"
)


class Tracing:
    """No tracing: every hook does nothing (the default, and what ``OTEL_*`` unset gives)."""

    enabled = False

    def __init__(self, *, problems: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)  # why traces were asked for but are off, for the log

    def install(self, app: FastAPI) -> None:
        """Add the per-request span middleware to ``app`` (nothing when off)."""

    def pool_span(self, name: str, config: ConnectionConfig) -> AbstractContextManager[Any]:
        """A child span of the current request for one step of a pool (``pool wait`` ...)."""
        return _NULL

    def query_span(self, config: ConnectionConfig, operation: str,
                   statements: Sequence[str]) -> AbstractContextManager[Any]:
        """The span of a request's statement(s); ``operation`` is ``query``, ``transaction``,
        ``tables``, ``rows`` or ``test``. Only the analyser's kind of each is recorded."""
        return _NULL

    def report(self, logger: logging.Logger) -> None:
        """One line at start: whether traces are sent, and any problem with the set-up."""
        for problem in self.problems:
            logger.warning(problem)

    def shutdown(self) -> None:
        """Flush and stop the exporters."""


class OtelTracing(Tracing):
    """Spans through an OpenTelemetry SDK ``TracerProvider`` (built from ``OTEL_*``, or a
    test's with an in-memory exporter)."""

    enabled = True

    def __init__(self, provider: TracerProvider, *, exporters: Sequence[str] = (),
                 problems: Sequence[str] = ()) -> None:
        super().__init__(problems=problems)
        from opentelemetry.trace import get_current_span

        self._provider = provider
        self._tracer: Tracer = provider.get_tracer("dbpool", __version__)
        self._current_span = get_current_span
        self._exporters = tuple(exporters)

    def install(self, app: FastAPI) -> None:
        app.add_middleware(_TracingMiddleware, tracer=self._tracer)

    def pool_span(self, name: str, config: ConnectionConfig) -> AbstractContextManager[Any]:
        if not self._current_span().is_recording():
            return _NULL  # outside a traced (and sampled) request: no span of its own
        return self._span(name, _pool_attributes(config))

    def query_span(self, config: ConnectionConfig, operation: str,
                   statements: Sequence[str]) -> AbstractContextManager[Any]:
        if not self._current_span().is_recording():
            return _NULL
        attributes = _pool_attributes(config)
        attributes["dbpool.operation"] = operation
        kinds = [_kind(sql, config) for sql in statements] or ["read"]  # our catalogue reads
        if operation == "transaction":
            attributes["db.operation.batch.size"] = len(kinds)
            attributes["dbpool.statement.kinds"] = kinds
        else:
            attributes["dbpool.statement.kind"] = kinds[0]
        return self._span("transaction" if operation == "transaction" else "query", attributes)

    def report(self, logger: logging.Logger) -> None:
        exporters = ", ".join(self._exporters) or "the caller's processors"
        logger.info("tracing on: spans go to %s", exporters)
        super().report(logger)

    def shutdown(self) -> None:
        self._provider.shutdown()

    @contextmanager
    def _span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[Span]:
        from opentelemetry.trace import SpanKind

        with self._tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes, record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                _failed(span, getattr(exc, "code", None) or type(exc).__name__)
                raise



def _pool_attributes(config: ConnectionConfig) -> dict[str, Any]:
    return {
        "db.system": config.db_type.value,
        "db.namespace": config.database,
        "db.client.connection.pool.name": config.pool_name,
        "dbpool.connection.id": config.id,
    }


def _kind(sql: str, config: ConnectionConfig) -> str:
    try:
        return analyse(sql, config.db_type).kind.value
    except Exception:  # a tracing aid must never fail the request; the query path reports
        return "unknown"


def _failed(span: Span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_status(Status(StatusCode.ERROR))  # no description: messages can quote values
    span.set_attribute("error.type", error_type)


class _Headers:
    """The W3C ``traceparent`` / ``tracestate`` getter over ASGI header pairs."""

    def __init__(self, scope: Scope) -> None:
        self._headers = scope["headers"]

    def get(self, carrier: Any, key: str) -> list[str] | None:
        wanted = key.lower().encode()
        found = [v.decode("latin-1") for k, v in self._headers if k == wanted]
        return found or None

    def keys(self, carrier: Any) -> list[str]:
        return [k.decode("latin-1") for k, _ in self._headers]


class _TracingMiddleware:
    """One SERVER span per HTTP request, named ``METHOD /route/{template}`` once routed."""

    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        from opentelemetry.propagate import extract
        from opentelemetry.trace import SpanKind, format_trace_id

        self.app = app
        self._tracer = tracer
        self._extract = extract
        self._server: SpanKind = SpanKind.SERVER
        self._format = format_trace_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        parent = self._extract(None, getter=_Headers(scope))  # type: ignore[arg-type]
        attributes = {"http.request.method": method, "url.path": scope["path"],
                      "url.scheme": scope.get("scheme", "http"),
                      "dbpool.request_id": request_id_var.get() or ""}
        with self._tracer.start_as_current_span(
            method, context=parent, kind=self._server, attributes=attributes,
            record_exception=False, set_status_on_exception=False,
        ) as span:
            token = trace_id_var.set(self._format(span.get_span_context().trace_id))
            status = 0

            async def traced_send(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    span.set_attribute("http.response.status_code", status)
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            except BaseException as exc:
                _failed(span, type(exc).__name__)
                raise
            finally:
                trace_id_var.reset(token)
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.update_name(f"{method} {route}")
                    span.set_attribute("http.route", route)
                if status >= 500:
                    _failed(span, str(status))


NO_TRACING = Tracing()


# ---- configuration from OTEL_* ---------------------------------------------------------


def _requested(environ: Mapping[str, str]) -> list[str]:
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    names = [n for n in names if n]
    if names:
        return [] if names == ["none"] else [n for n in names if n != "none"]
    endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    return ["otlp"] if any(environ.get(name) for name in endpoints) else []


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    """One exporter by its ``OTEL_TRACES_EXPORTER`` name; ImportError / ValueError say why not."""
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console, none)")
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ValueError(
                "OTLP over gRPC needs opentelemetry-exporter-otlp-proto-grpc installed "
                "(or set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf)"
            ) from None
        exporter: SpanExporter = GrpcExporter()
        return exporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def tracing_from_env(environ: Mapping[str, str] | None = None) -> Tracing:
    """:class:`OtelTracing` when ``OTEL_*`` asks for traces and the SDK is installed, else
    the no-op :class:`Tracing` (whose ``problems`` say why, when traces were asked for)."""
    env = os.environ if environ is None else environ
    names = _requested(env)
    if not names:
        return Tracing()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        return Tracing(problems=[_EXTRA_MISSING])
    problems, used = [], []
    # Our default name; OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES still win.
    defaults = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "dbpool"}
    provider = TracerProvider(resource=Resource.create(defaults))
    for name in names:
        try:
            provider.add_span_processor(BatchSpanProcessor(_exporter(name, env)))
            used.append(name)
        except (ImportError, ValueError) as exc:
            problems.append(f"tracing: exporter {name!r} left out: {exc}")
    if not used:
        return Tracing(problems=[*problems, "tracing: no usable exporter; running without traces"])
    return OtelTracing(provider, exporters=used, problems=problems)
