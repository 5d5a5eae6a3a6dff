"""The HTTP protocol ``dbpool serve`` runs: uvicorn's httptools protocol plus two bounds.

- Headers deadline and size: each request's headers must arrive within ``header_timeout``
  of the connection opening or of the previous response (uvicorn's keep-alive timer stops
  at the first byte, so a client dribbling headers would otherwise hold its connection for
  ever), and within ``MAX_HEADER_BYTES`` (else 431 and the connection is closed).
- Bounded drain: a request refused from its headers (401, 403, 413) is answered while its
  body may still arrive; the rest of that body is read and dropped, so that the client
  (httpx included) reads the answer instead of a reset, but only up to ``drain_bytes`` and
  ``drain_seconds``: past either the connection is closed.

This is the one module that knows uvicorn's protocol internals; ``check()`` fails at start
when they are not there.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from app.settings import Settings

__all__ = ["DRAIN_BYTES", "MAX_HEADER_BYTES", "EdgeProtocol", "check", "edge_protocol"]

DRAIN_BYTES = 64 * 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
_HOOKS = ("connection_made", "connection_lost", "data_received", "on_message_begin",
          "on_headers_complete", "on_body", "on_message_complete", "on_response_complete")
_HEADERS_TOO_LARGE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                      b"connection: close\r\n\r\n")


class EdgeProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with a headers deadline and a bounded drain (see module doc)."""

    header_timeout: float = 5.0
    drain_seconds: float = 30.0
    drain_bytes: int = DRAIN_BYTES

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        self._drained = 0
        self._header_bytes = 0
        self._in_headers = True
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        # Counted only while still in the headers once the chunk is parsed, so a chunk that
        # ends the headers and starts the body never counts against them.
        too_large = self._in_headers and self._header_bytes > MAX_HEADER_BYTES
        if too_large and not self.transport.is_closing():
            self.transport.write(_HEADERS_TOO_LARGE)
            self.transport.close()

    def on_message_begin(self) -> None:
        self._in_headers = True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_headers = False
        self._header_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if self.cycle.response_complete:  # answered already: this is the drain
            self._drained += len(body)
            if self._drained > self.drain_bytes:
                self.transport.close()
                return
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_headers = True  # what comes next is the next request's headers
        if self.cycle.response_complete:  # drained: now wait for the next request's headers
            self._arm(self.header_timeout)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.transport.is_closing() or not self.cycle.response_complete:
            return  # closed, or a pipelined request has started
        if self.cycle.more_body:
            self._drained = 0
            self._arm(self.drain_seconds)
        else:
            self._arm(self.header_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        idle = self.cycle is None or self.cycle.response_complete
        if idle and not self.transport.is_closing():
            self.transport.close()


def check() -> None:
    """Fail at start, not mid-request, when uvicorn no longer has what this module extends."""
    missing = [name for name in _HOOKS if not callable(getattr(HttpToolsProtocol, name, None))]
    if missing:
        raise RuntimeError(f"uvicorn's HttpToolsProtocol lacks {', '.join(missing)}")


def edge_protocol(settings: Settings) -> type[EdgeProtocol]:
    """``EdgeProtocol`` with this configuration's bounds (uvicorn builds one per connection)."""
    check()
    bounds: dict[str, Any] = {
        "header_timeout": settings.keep_alive_seconds,
        "drain_seconds": settings.body_timeout_seconds,
    }
    return type("ConfiguredEdgeProtocol", (EdgeProtocol,), bounds)
