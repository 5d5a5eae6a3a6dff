"""Logging set-up (text or one JSON object per line), the current request id and trace id.

A leaf module: the API middleware sets the request id (and, with tracing on, the tracing
middleware the trace id); any module's log lines carry them.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

__all__ = ["configure_logging", "current_request_id", "request_id_var", "trace_id_var"]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dbpool_request_id", default=None
)
# The OpenTelemetry trace id (32 hex digits) of the request being served, when traced.
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "dbpool_trace_id", default=None
)

# uvicorn adds `color_message` (the same text with ANSI colours) to its records: noise here.
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {
    "message",
    "asctime",
    "color_message",
}


def current_request_id() -> str | None:
    """The id of the HTTP request being served, if any."""
    return request_id_var.get()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        trace_id = trace_id_var.get()
        if trace_id is not None and not hasattr(record, "trace_id"):
            record.trace_id = trace_id
        return True


# What SQLAlchemy's pool logs at ERROR, with a traceback, when it resets or closes a
# connection that a hung-up client, a cut network or a killed backend already broke. The pool
# then discards the connection, as designed (session_reset): normal traffic for a pool
# service, so one WARNING line names it instead.
_POOL_DISCARDS = (
    "Exception during reset or similar",
    "Exception terminating connection",
    "Exception closing connection",
)


class _PoolDiscardFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.levelno == logging.ERROR
            and record.name.startswith(("sqlalchemy.pool", "app.pools."))
            and isinstance(record.msg, str)
            and record.msg.startswith(_POOL_DISCARDS)
        ):
            error = record.exc_info[1] if record.exc_info else None
            cause = type(error).__name__ if error is not None else "unknown"
            record.msg = f"connection discarded: {record.msg.split(' %', 1)[0].lower()} ({cause})"
            record.args = ()
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time level logger [request id] message key=value ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        for name in ("request_id", "trace_id"):
            value = extras.pop(name, None)
            if value:
                line += f" {name}={value}"
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Route every logger (ours, uvicorn's, SQLAlchemy's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_PoolDiscardFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
