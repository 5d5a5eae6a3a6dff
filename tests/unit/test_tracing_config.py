"""Tracing is switched on by the standard ``OTEL_*`` variables only, says why when it cannot
be, and puts the trace id in log lines (the spans themselves: tests/integration/test_tracing.py)."""

from __future__ import annotations

import logging
import sys

import pytest

from app.logs import TextFormatter, _RequestIdFilter, trace_id_var
from app.tracing import OtelTracing, Tracing, tracing_from_env


@pytest.mark.parametrize("environ", [
    {},
    {"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
    {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"},
    {"OTEL_SERVICE_NAME": "crm-pool"},
])
def test_off_unless_an_exporter_or_an_endpoint_is_set(environ: dict[str, str]) -> None:
    tracing = tracing_from_env(environ)
    assert type(tracing) is Tracing and not tracing.enabled and not tracing.problems


@pytest.mark.parametrize(("environ", "exporters"), [
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
    ({"OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
])
def test_on_with_the_requested_exporters(
    environ: dict[str, str], exporters: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    tracing = tracing_from_env(environ)
    try:
        assert isinstance(tracing, OtelTracing) and tracing.enabled and not tracing.problems
        caplog.set_level(logging.INFO)
        tracing.report(logging.getLogger("t"))
        assert f"tracing on: spans go to {', '.join(exporters)}" in caplog.text
    finally:
        tracing.shutdown()


def test_an_unusable_exporter_is_named_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    tracing = tracing_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    assert not tracing.enabled
    tracing.report(logging.getLogger("t"))
    assert "exporter 'zipkin' left out" in caplog.text
    assert "running without traces" in caplog.text
    grpc = tracing_from_env({"OTEL_TRACES_EXPORTER": "otlp,console",
                             "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    try:
        assert grpc.enabled  # console still works
        assert any("opentelemetry-exporter-otlp-proto-grpc" in p for p in grpc.problems)
    finally:
        grpc.shutdown()


def test_requested_without_the_extra_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    tracing = tracing_from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.enabled
    tracing.report(logging.getLogger("t"))
    assert "pip install 'dbpool[otel]'" in caplog.text
    assert caplog.records[0].levelno == logging.WARNING


def test_log_lines_carry_the_trace_id_only_while_traced() -> None:
    formatter, stamp = TextFormatter(), _RequestIdFilter()

    def line() -> str:
        record = logging.makeLogRecord({"msg": "query failed", "levelname": "WARNING"})
        stamp.filter(record)
        return formatter.format(record)

    assert "trace_id" not in line()
    token = trace_id_var.set("4bf92f3577b34da6a3ce929d0e0e4736")
    try:
        assert line().endswith("query failed trace_id=4bf92f3577b34da6a3ce929d0e0e4736")
    finally:
        trace_id_var.reset(token)
