"""aiomysql and asyncmy: the one module that touches their (and PyMySQL's) private API.

Fast path: liveness read from the driver's transport and reader; the session's
``NO_BACKSLASH_ESCAPES`` from the status flags of its last answer (``server_status``);
set-up and reset pipelined on the driver's private I/O (``mysql_wire``).

Public path: liveness from ``closed`` / ``connected`` (a close by the server is then seen
by the checkout ping instead); ``SELECT @@SESSION.sql_mode`` before each statement; the
set-up's ``SET`` statements through a cursor (multi-statements stay off: the client never
asks for them at connect); and no reset: a returned connection is discarded, so the next
request gets a fresh session (correct, a connect slower).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import time
from typing import Any

import aiomysql
import aiomysql.connection
import pymysql
from pymysql.constants import ER

from app.pools.drivers.base import Fetched, Surface, confirm_surface, surface_present
from app.pools.drivers.mysql_wire import Pipeline, send_pipelined

__all__ = ["AiomysqlAdapter", "AsyncmyAdapter", "MySqlAdapter"]

_JSON = 245
_NO_BACKSLASH_ESCAPES = 0x200  # server_status flag: the session's sql_mode has it
_IN_TRANS = 0x1  # server_status flag: a transaction is open
_AUTOCOMMIT = 0x2  # server_status flag: autocommit is on
_WIRE = ("_result", "_write_bytes", "_read_bytes", "_execute_command", "server_status")
_DRAIN_SLICE = 256  # rows read per call while draining (bounds memory between checks)
_CELL = 8  # bytes counted for a value that is not text or bytes (numbers, dates, NULL)
_ROW = 4  # a row packet's header
_SESSION_CLOSED = "_dbpool_session_closed"  # a hung-up session's watch, on its driver
_DISCARD_READ = 65536  # bytes read at a time from a hung-up session until it closes


class MySqlAdapter:
    """What aiomysql and asyncmy share; a subclass names the driver's own parts."""

    name = "mysql"

    def _surface(self) -> Surface:
        raise NotImplementedError

    def _live_surface(self, driver: Any) -> Surface:
        return ((driver, _WIRE),)

    @property
    def fast(self) -> bool:
        return surface_present(self.name, self._surface)

    def confirm(self, driver: Any) -> None:
        confirm_surface(self.name, self._live_surface(driver))

    def is_closed(self, driver: Any) -> bool:
        raise NotImplementedError

    def server_id(self, driver: Any) -> int:
        return int(driver.thread_id())

    async def backslash_escapes(self, driver: Any) -> bool:
        if self.fast:
            return not (driver.server_status or 0) & _NO_BACKSLASH_ESCAPES
        cursor = await self.cursor(driver)
        await cursor.execute("SELECT @@SESSION.sql_mode")
        (mode,) = await cursor.fetchone()
        await cursor.close()
        return "NO_BACKSLASH_ESCAPES" not in str(mode).upper()

    def session_marker(self, driver: Any) -> Any:
        """The ``sql_mode`` flag of a clean session's status (fast path; None otherwise)."""
        return (driver.server_status or 0) & _NO_BACKSLASH_ESCAPES if self.fast else None

    def session_changed(self, driver: Any, marker: Any) -> bool:
        """A transaction open, autocommit off, ``NO_BACKSLASH_ESCAPES`` turned on or off, or
        warnings left by the last statement (the next caller's ``SHOW WARNINGS`` would read
        them), as the server's last answer says. The public path cannot see them: it
        always says changed."""
        if not self.fast or marker is None:
            return True
        status = driver.server_status or 0
        if status & _IN_TRANS or not status & _AUTOCOMMIT:
            return True
        if status & _NO_BACKSLASH_ESCAPES != marker:
            return True
        result = driver._result
        return result is not None and getattr(result, "warning_count", 1) != 0

    async def cursor(self, driver: Any) -> Any:
        """An unbuffered (server-side) cursor: rows are read only as far as fetched."""
        raise NotImplementedError

    async def run(self, driver: Any, sql: str, args: Any) -> Any:
        """Execute on an unbuffered cursor and hand it back, rows unread."""
        cursor = await self.cursor(driver)
        await cursor.execute(sql, args)
        return cursor

    async def drain(self, cursor: Any, *, seconds: float, max_bytes: int) -> bool:
        """Read and drop the rest of an unbuffered cursor's result (never encoded): True when
        its end came within ``seconds`` and about ``max_bytes`` of row data (the cursor is
        then closed and the connection clean); False past either bound, rows left unread.

        Public API on both drivers (``fetchmany``): the bound is checked between slices,
        so a slice of very wide rows can overshoot it by at most ``_DRAIN_SLICE`` rows."""
        deadline = time.monotonic() + seconds
        read = 0
        while True:
            rows = await cursor.fetchmany(_DRAIN_SLICE)
            if len(rows) < _DRAIN_SLICE:  # the end of the result (its EOF packet read)
                await cursor.close()
                return True
            read += sum(_row_bytes(row) for row in rows)
            if read > max_bytes or time.monotonic() >= deadline:
                return False

    def json_columns(self, description: Any) -> frozenset[int]:
        """The JSON columns of a cursor's ``description``."""
        return frozenset(i for i, d in enumerate(description) if d[1] == _JSON)

    async def fetch(self, driver: Any, sql: str, args: Any, *, limit: int,
                    drain: bool = False) -> Fetched:
        """At most ``limit`` rows; when there may be more, they stay unread on the wire
        (``unread``: the connection must be discarded), unless ``drain`` (read, dropped)."""
        cursor = await self.run(driver, sql, args)
        if cursor.description is None:
            count = cursor.rowcount
            await cursor.close()
            return Fetched(columns=None, rows=[], json_columns=frozenset(),
                           affected=max(count, 0))
        rows = list(await cursor.fetchmany(limit))
        description = cursor.description
        unread = len(rows) >= limit and not drain
        if not unread:
            await cursor.close()
        return Fetched(columns=[d[0] for d in description], rows=rows, unread=unread,
                       json_columns=self.json_columns(description))

    async def execute(self, driver: Any, sql: str) -> None:
        cursor = await self.cursor(driver)
        await cursor.execute(sql)
        await cursor.close()

    async def ping(self, driver: Any) -> None:
        await driver.ping(False)

    async def setup(self, driver: Any, plan: Pipeline) -> None:
        """Give a new session its options and settings."""
        if self.fast:
            await send_pipelined(driver, plan)
            return
        for sql in plan.sql:
            await self.execute(driver, sql)

    async def reset(self, driver: Any, plan: Pipeline) -> bool:
        if not self.fast:
            return False  # no public reset command: the connection is discarded
        await send_pipelined(driver, plan)
        return True

    def refused_before_send(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def watch_on_cancel(self, driver: Any) -> None:
        """Prepare a new connection for ``hang_up`` (nothing to prepare by default)."""

    def hang_up(self, driver: Any) -> asyncio.Future[bool] | None:
        """Stop using ``driver`` now, without a round trip: the server ends the session as
        soon as its statement ends. Returns a future done once the server has closed the
        session, or None when that cannot be seen (then the socket is closed outright)."""
        with contextlib.suppress(Exception):
            driver.close()  # synchronous in both drivers
        return None

    async def cancel(self, via: Any, server_id: int) -> bool:
        cursor = via.cursor()  # a plain (buffered) one: aiomysql's is awaited, asyncmy's not
        cursor = await cursor if inspect.isawaitable(cursor) else cursor
        try:
            await cursor.execute(f"KILL QUERY {int(server_id)}")
        except Exception as exc:  # aiomysql's and asyncmy's own OperationalError
            if exc.args[:1] == (ER.NO_SUCH_THREAD,):
                return False  # the session, and its statement with it, has already ended
            raise
        finally:
            closed = cursor.close()
            if inspect.isawaitable(closed):
                await closed
        return True


def _stop_sending(driver: Any) -> None:
    """Take the socket from the driver (closed to it, and to SQLAlchemy), shut its sending
    side and watch for the server's close (``_SESSION_CLOSED``); closed outright when the
    transport cannot half-close."""
    writer, reader = driver._writer, driver._reader
    if writer is None:
        return  # closed already (or stopped sending: watched already)
    driver._writer = driver._reader = None
    driver._close_reason = "Cancelled during execution"
    half_closed = False
    if reader is not None and writer.can_write_eof():
        with contextlib.suppress(Exception):
            writer.write_eof()
            half_closed = True
    if not half_closed:
        writer.transport.close()
        return
    setattr(driver, _SESSION_CLOSED, asyncio.ensure_future(_until_closed(reader, writer)))


async def _until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Read and drop until the stream ends, then close it. True when it ended cleanly: the
    server closes a session only once its statement is over (answered, killed, or stopped on
    seeing its client gone) and it has read the end of our stream; a reset may come from
    something in between (a relay that drops both ends) while the session runs on. Holds
    ``writer``: a stream writer collected closes its transport."""
    try:
        while await reader.read(_DISCARD_READ):
            pass
        return True
    except Exception:  # reset: by the server or by something in between
        return False
    finally:
        writer.close()


def _row_bytes(row: Any) -> int:
    """About how many bytes a row took on the wire (text and bytes by length)."""
    return _ROW + sum(len(v) if isinstance(v, str | bytes | bytearray) else _CELL for v in row)


class AiomysqlAdapter(MySqlAdapter):
    """aiomysql (on PyMySQL)."""

    name = "aiomysql"

    def _surface(self) -> Surface:
        return ((aiomysql.connection.Connection, ("_write_bytes", "_read_bytes",
                                                  "_execute_command")),)

    def _live_surface(self, driver: Any) -> Surface:
        reader = getattr(driver, "_reader", None)
        return ((driver, (*_WIRE, "_writer", "_reader")), (reader, ("_eof",)))

    def is_closed(self, driver: Any) -> bool:
        if driver is None or driver.closed:
            return True
        if not self.fast:
            return False
        if driver._writer.transport.is_closing():
            return True
        return bool(driver._reader._eof)

    async def cursor(self, driver: Any) -> Any:
        return await driver.cursor(aiomysql.SSCursor)

    def watch_on_cancel(self, driver: Any) -> None:
        """A read cancelled mid-statement (aiomysql then closes the socket) stops sending
        instead, so the session's end stays visible to ``hang_up``."""
        if self.fast:
            driver._close_on_cancel = functools.partial(_stop_sending, driver)

    def hang_up(self, driver: Any) -> asyncio.Future[bool] | None:
        """Stop sending (the server sees the client gone, as with a close) and read and drop
        what the server still sends until it closes the session, which it does once the
        statement has ended and it reads the end of the stream. Needs the driver's private
        streams and a transport that can half-close (not TLS); otherwise closes outright."""
        if not self.fast:
            return super().hang_up(driver)
        _stop_sending(driver)
        closed: asyncio.Future[bool] | None = getattr(driver, _SESSION_CLOSED, None)
        return closed

    def refused_before_send(self, exc: BaseException) -> bool:
        # "Not connected", from the driver's alive-check before writing.
        return isinstance(exc, pymysql.err.InterfaceError)


class AsyncmyAdapter(MySqlAdapter):
    """asyncmy (a protocol of its own, compiled)."""

    name = "asyncmy"

    def _surface(self) -> Surface:
        try:
            from asyncmy.connection import Connection
        except ImportError:  # moved, or the optional driver is not installed
            return ((None, ("asyncmy.connection.Connection",)),)
        return ((Connection, ("_transport", "_connected", "_proto", *_WIRE)),)

    def is_closed(self, driver: Any) -> bool:
        if driver is None or not driver.connected:
            return True
        if not self.fast:
            return False
        transport = driver._transport
        if transport is None or transport.is_closing() or not driver._connected:
            return True
        return bool(getattr(driver._proto, "eof", False))

    async def cursor(self, driver: Any) -> Any:
        from asyncmy.cursors import SSCursor

        return driver.cursor(SSCursor)

    def refused_before_send(self, exc: BaseException) -> bool:
        from asyncmy.errors import InterfaceError

        return isinstance(exc, InterfaceError)
