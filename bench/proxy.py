"""A TCP proxy on loopback that the recovery measurement cuts and restores.

It runs on the bench's own event loop in front of a real database; the real servers are
never restarted. ``cut()`` resets every proxied connection and refuses new ones (the
database "went away"); ``restore()`` forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["CutProxy"]

_CHUNK = 64 * 1024


class CutProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``async with`` starts and stops it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.is_cut = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<CutProxy port={self.port} cut={self.is_cut} links={len(self._writers) // 2}>"

    async def __aenter__(self) -> CutProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        """Reset every open link; new connections are reset on accept until ``restore``."""
        self.is_cut = True
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    def restore(self) -> None:
        self.is_cut = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.is_cut:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), timeout=5
            )
        except (OSError, TimeoutError):
            _reset(writer)
            return
        self._writers |= {writer, up_writer}
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await src.read(_CHUNK):
                dst.write(chunk)
                await dst.drain()
        self._writers.discard(dst)
        dst.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    # RST, not FIN: the peer sees an abrupt failure, as when a server dies.
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
