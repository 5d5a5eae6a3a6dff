"""Stopping a running statement on the server without going past the pool's budget.

The database never counts more than ``max_connections`` sessions of a pool's login:

- A statement stopped by the server's own limit (``statement_timeout``,
  ``max_statement_time``, ``max_execution_time``) leaves its connection clean: it goes back
  to the pool (the query path treats that error as clean). No cancel, no replacement.
- PostgreSQL, client timer or client disconnect: when the read is cancelled, asyncpg sends
  the protocol's CancelRequest (no login, not a session) and the reset on return waits for
  the server to acknowledge it, so the connection also comes back clean. A connection that
  must be discarded is closed gracefully: the server hangs up once the backend is gone.
- MySQL/MariaDB: ``KILL QUERY`` must be sent on another connection. It goes over a
  connection of the same pool in a free slot (an idle one, or one opened in that slot).
  Only when every slot is busy does it use one short-lived extra connection (``side``), at
  most one per pool at a time: the one documented excess over ``max_connections``. The
  connection that ran the statement is then discarded, and its slot is freed only once the
  server no longer lists its session.

Every step is bounded in time; failing to cancel is logged, never raised.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import ConnectionConfig, DbType
from app.pools.drivers import adapter_of
from app.pools.gate import FairGate

__all__ = ["Canceller", "backend_id"]

log = logging.getLogger(__name__)

_GONE_POLL = 0.02


def backend_id(driver_connection: Any, db_type: DbType) -> int | None:
    """The server's id for this connection: PostgreSQL backend pid, MySQL thread id."""
    try:
        return adapter_of(driver_connection).server_id(driver_connection)
    except Exception:  # a driver without it: the server-side limit still holds
        return None


def _driver(conn: AsyncConnection) -> Any | None:
    sync = conn.sync_connection
    if sync is None or sync.invalidated or sync.closed:
        return None
    return sync.connection.driver_connection


class Canceller:
    """Discards one pool's connections, stopping what they run first (MySQL/MariaDB)."""

    def __init__(self, config: ConnectionConfig, engine: AsyncEngine, gate: FairGate, *,
                 timeout: float, side: Callable[[], AsyncEngine]) -> None:
        self._config = config
        self._engine = engine
        self._gate = gate
        self._timeout = timeout
        self._new_side = side
        self._side: AsyncEngine | None = None  # built on first need
        self._side_lock = asyncio.Lock()  # at most one extra connection per pool

    async def discard(self, conn: AsyncConnection) -> None:
        """Make sure ``conn`` is never reused: stop its statement (MySQL/MariaDB), close it,
        and return once the server no longer lists its session (bounded)."""
        driver = _driver(conn)
        if not self._config.db_type.is_mysql_family:
            await self._close_pg(driver)
            await self._invalidate(conn)
            return
        thread = None if driver is None else backend_id(driver, self._config.db_type)
        if thread is None:
            await self._invalidate(conn)
            return
        try:
            async with asyncio.timeout(self._timeout), self._killer() as killer:
                alive = await _kill_query(killer, thread)
                await self._invalidate(conn)
                if alive:
                    await self._wait_gone(killer, thread)
        except Exception as exc:
            log.warning("stopping a statement on the server failed",
                        extra={"pool": self._config.pool_name, "error": type(exc).__name__})
        await self._invalidate(conn)  # a no-op when done above

    async def _close_pg(self, driver: Any | None) -> None:
        """asyncpg's graceful close: Terminate, then wait for the server to hang up, which it
        does once the backend has exited (its session is gone)."""
        if driver is None or driver.is_closed():
            return
        with suppress(Exception):
            await driver.close(timeout=self._timeout)

    @asynccontextmanager
    async def _killer(self) -> AsyncIterator[Any]:
        """A driver connection to send the kill on: one of the pool's, in a free slot; else
        the one extra connection."""
        if self._gate.try_acquire():
            try:
                async with self._engine.connect() as conn:
                    yield (await conn.get_raw_connection()).driver_connection
            finally:
                self._gate.release()
            return
        async with self._side_lock:
            if self._side is None:
                self._side = self._new_side()
            async with self._side.connect() as conn:
                log.info("every connection is busy: the kill uses the pool's one extra "
                         "connection", extra={"pool": self._config.pool_name})
                yield (await conn.get_raw_connection()).driver_connection

    async def aclose(self) -> None:
        """Dispose the extra connection's engine, if it was ever built."""
        if self._side is not None:
            await self._side.dispose()

    async def _wait_gone(self, killer: Any, thread: int) -> None:
        sql = f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = {int(thread)}"
        for _ in range(round(self._timeout / _GONE_POLL) + 1):  # polled: nothing to wait on
            if not (await _fetch_one(killer, sql))[0]:
                return
            await asyncio.sleep(_GONE_POLL)

    async def _invalidate(self, conn: AsyncConnection) -> None:
        with suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await conn.invalidate()


async def _kill_query(driver: Any, thread: int) -> bool:
    """``KILL QUERY``; False when the thread has already ended ("Unknown thread id": the
    driver closes a connection whose read was cancelled, and the server ends its thread as
    soon as the statement stops)."""
    return await adapter_of(driver).cancel(driver, thread)


async def _cursor(driver: Any) -> Any:
    cursor = driver.cursor()
    return await cursor if inspect.isawaitable(cursor) else cursor  # aiomysql | asyncmy


async def _fetch_one(driver: Any, sql: str) -> Any:
    cursor = await _cursor(driver)
    try:
        await cursor.execute(sql)
        return await cursor.fetchone()
    finally:
        await _close(cursor)


async def _close(cursor: Any) -> None:
    closed = cursor.close()
    if inspect.isawaitable(closed):
        await closed
