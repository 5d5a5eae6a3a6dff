"""An asyncio TCP proxy that fault tests put between dbpool and a real database.

It listens on ``127.0.0.1:<free port>`` and forwards every accepted connection to one
target. Four states, switched at any time:

- open (the default, "pass"): bytes flow both ways;
- ``delay(seconds)``: bytes flow, each chunk held ``seconds`` first, in order, both ways
  (a slow or distant network path);
- ``cut()``: every open connection is reset, new ones are accepted and reset at once
  (the database "went away": a restart, a dead network path);
- ``stall()``: connections stay up and new ones are accepted, but nothing is forwarded
  (a black-holed network: the client waits until its own timeout fires).

``sent_upstream`` counts the bytes forwarded client -> server (what the client sent the
database), so a test can show that nothing was sent in some window.

``restore()`` returns to open; bytes held back by a stall are then delivered, as TCP would
after a partition heals, and a delay stops applying to chunks not yet held. Every wait
here is bounded, so a broken test cannot hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import socket
import struct
from dataclasses import dataclass, field

__all__ = ["ProxyState", "TcpProxy"]

_CHUNK = 64 * 1024


class ProxyState(enum.Enum):
    OPEN = "open"
    DELAYED = "delayed"
    CUT = "cut"
    STALLED = "stalled"


@dataclass(eq=False)
class _Link:
    """One client connection and its upstream twin, with the two pumps between them."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        for writer in (self.client, self.upstream):
            if writer is not None:
                _reset(writer)
        for pump in self.pumps:
            pump.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST rather than FIN, so the peer sees an abrupt failure, not a clean EOF."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target_host:target_port``, with faults on demand."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.connect_timeout = connect_timeout
        self.state = ProxyState.OPEN
        self.latency = 0.0  # seconds added to every chunk while DELAYED
        self.accepted = 0  # connections accepted and forwarded (or held, when stalled)
        self.dropped = 0  # connections reset on arrival because the proxy was cut
        self.sent_upstream = 0  # bytes forwarded client -> server, all connections
        self._links: set[_Link] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None

    def __repr__(self) -> str:
        return (
            f"<TcpProxy {self.listen_host}:{self._port_or_none()} -> "
            f"{self.target_host}:{self.target_port} state={self.state.value} "
            f"latency={self.latency}s "
            f"open={self.open_connections} accepted={self.accepted} dropped={self.dropped}>"
        )

    async def __aenter__(self) -> TcpProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def port(self) -> int:
        """The port the proxy listens on (valid after ``start()``)."""
        port = self._port_or_none()
        if port is None:
            raise RuntimeError("TcpProxy.start() has not been awaited")
        return port

    @property
    def open_connections(self) -> int:
        """Client connections currently held open by the proxy."""
        return len(self._links)

    async def start(self) -> None:
        """Listen on a free port of ``listen_host``."""
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)

    def cut(self) -> None:
        """Reset every open connection; reset new ones on arrival until ``restore()``."""
        self.state = ProxyState.CUT
        self.latency = 0.0
        self._flowing.set()  # wake held pumps so they notice their sockets are gone
        for link in list(self._links):
            link.reset()

    def delay(self, seconds: float) -> None:
        """Forward, but hold every chunk ``seconds`` first (added latency, both directions)."""
        if seconds < 0:
            raise ValueError("delay must be >= 0 seconds")
        self.state = ProxyState.DELAYED
        self.latency = seconds
        self._flowing.set()

    def stall(self) -> None:
        """Keep connections up (and accept new ones) but forward nothing."""
        self.state = ProxyState.STALLED
        self.latency = 0.0
        self._flowing.clear()

    def restore(self) -> None:
        """Forward again; bytes held back by a stall are delivered now."""
        self.state = ProxyState.OPEN
        self.latency = 0.0
        self._flowing.set()

    async def aclose(self, timeout: float = 5.0) -> None:
        """Stop listening and reset every connection; bounded by ``timeout`` seconds."""
        if self._server is not None:
            self._server.close()
        links = list(self._links)
        for link in links:
            link.reset()
        pumps = [pump for link in links for pump in link.pumps]
        if pumps:
            await asyncio.wait(pumps, timeout=timeout)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout)
            self._server = None

    def _port_or_none(self) -> int | None:
        if self._server is None or not self._server.sockets:
            return None
        return int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.state is ProxyState.CUT:
            self.dropped += 1
            _reset(writer)
            return
        self.accepted += 1
        link = _Link(client=writer)
        self._links.add(link)
        try:
            await self._forward(link, reader)
        finally:
            self._links.discard(link)
            link.reset()

    async def _forward(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            up_reader, upstream = await asyncio.wait_for(
                asyncio.open_connection(self.target_host, self.target_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError):
            return
        link.upstream = upstream
        if self.state is ProxyState.CUT:  # cut while we were connecting
            return
        link.pumps = [
            asyncio.create_task(self._pump(reader, upstream, upstream=True)),
            asyncio.create_task(self._pump(up_reader, link.client)),
        ]
        # Either side ending ends the link: a half-open relay would hide the failure.
        await asyncio.wait(link.pumps, return_when=asyncio.FIRST_COMPLETED)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *,
                    upstream: bool = False) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while chunk := await source.read(_CHUNK):
                if self.latency > 0:
                    await asyncio.sleep(self.latency)
                await self._flowing.wait()
                if self.state is ProxyState.CUT:
                    return
                if upstream:
                    self.sent_upstream += len(chunk)
                sink.write(chunk)
                await sink.drain()
