"""Stopping a running statement on the server without going past the pool's budget.

The database never counts more than ``max_connections`` sessions of a pool's login:

- A statement stopped by the server's own limit (``statement_timeout``,
  ``max_statement_time``, ``max_execution_time``) leaves its connection clean: it goes back
  to the pool (the query path treats that error as clean). No cancel, no replacement.
- PostgreSQL, client timer or client disconnect: when the read is cancelled, asyncpg sends
  the protocol's CancelRequest (no login, not a session) and the reset on return waits for
  the server to acknowledge it, so the connection also comes back clean. A connection that
  must be discarded is closed gracefully: the server hangs up once the backend is gone.
- MySQL/MariaDB: the statement's connection stops sending at once (aiomysql over plain
  TCP or a Unix socket: its sending side is shut, and the server's close of the session is
  watched for; otherwise its socket is closed outright), but its connection (SQLAlchemy's
  record of it) stays checked out and keeps its slot, so no checkout can reopen that record
  while the old session still runs. The slot is freed once the session is gone: its close
  seen (the statement ended by itself or was killed), or, for a session that cannot be
  watched, the server no longer listing it.
  ``KILL QUERY`` must be sent on another connection, and that connection is always one of
  the pool's own, in a slot of its gate: never an extra one. One killer per pool sends
  every kill: it takes a free slot, or the next one freed, ahead of every request
  (``FairGate.acquire(first=True)``), kills each statement handed to it, statements that
  come while it runs included, and frees its slot once none is left. A burst of discards so
  costs one slot, not one per statement; and when every slot holds a statement awaiting its
  kill, the first to end by itself frees the slot the killer needs. The session's own
  statement limit is never taken as proof that the statement has ended: MariaDB's timer can
  fire seconds late under load, and a caller can lift the limit for one statement
  (``SET STATEMENT max_statement_time=0 FOR ...``). When no slot comes for ``slot_wait``
  (``query_timeout`` plus a margin: every slot holds a statement that has outlived its
  limit, or that cannot be watched), the killer works from the oldest one's slot, its record
  reopened: only then, and only until that statement is killed, the server counts one
  session more than the pool holds slots. Waiting for the statement's end instead would let
  one caller freeze a pool for as long as its statement runs.
  A caller waits at most ``timeout`` for all this; past that it goes on in the
  background, still holding the victim's slot (``take_over``), so a kill the server is slow
  to answer never lets a new session open next to the ones it has not ended yet. A kill
  that fails (the server unreachable) is logged and frees every victim's slot; so does a
  statement still running ``hard_limit`` after its kill.

Every step is bounded in time; failing to cancel is logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.pools.drivers import MySqlAdapter, adapter_of
from app.pools.gate import FairGate, GateTimeout

__all__ = ["Borrow", "Canceller", "backend_id"]

# A driver connection of the pool's own for the block's duration (the caller holds a gate
# slot); one that fails in use is discarded (``ManagedPool`` lends it through its lender).
Borrow = Callable[[], AbstractAsyncContextManager[Any]]

log = logging.getLogger(__name__)
T = TypeVar("T")

_GONE_POLL = (0.02, 0.2)  # seconds between two looks at the session list: first, at most
_SERVER_LIMIT_MARGIN = 1.0  # past the session's statement limit: how long a kill waits beyond it


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


@dataclass(eq=False)
class _Victim:
    """A statement to stop: its connection, the server's id of it, and its stop's state."""

    conn: AsyncConnection
    thread: int
    ended: asyncio.Future[None]  # resolved once its slot may be freed
    # Done once the socket has closed; True when it closed cleanly, as the server closes a
    # session once its statement is over (a hint, confirmed by the session list before its
    # slot is freed); False when reset, maybe by something in between.
    closed: asyncio.Future[bool] | None
    killed_at: float | None = None  # loop time the kill went out
    gone: bool = False  # the server no longer lists it, or the kill gave up on it
    lends_slot: bool = False  # the killer works in this victim's slot: freed when it ends


class Canceller:
    """Discards one pool's connections, stopping what they run first (MySQL/MariaDB),
    within the pool's gate."""

    def __init__(self, config: ConnectionConfig, borrow: Borrow, gate: FairGate, *,
                 timeout: float) -> None:
        self._config = config
        self._borrow = borrow
        self._gate = gate
        self._timeout = timeout
        # How long the killer waits for a slot at most; none by then: every slot holds a
        # statement awaiting its kill, none seen to end, and the killer works from the
        # oldest one's slot.
        self.slot_wait = config.query_timeout + _SERVER_LIMIT_MARGIN
        # How long a kill may wait for its statement to go: the statement has ended by then
        # whatever the kill does, so the server answers unless its link is gone.
        self.hard_limit = config.query_timeout + 2 * timeout + _SERVER_LIMIT_MARGIN
        self._stops: dict[AsyncConnection, asyncio.Task[None]] = {}
        self._victims: dict[AsyncConnection, _Victim] = {}
        self._arrived = asyncio.Event()  # wakes the killer between two looks
        self._killer: asyncio.Task[None] | None = None
        self._closing = False

    @property
    def busy(self) -> int:
        """Statements still being stopped (each holds its slot; the killer holds one more)."""
        return len(self._stops)

    async def discard(self, conn: AsyncConnection) -> None:
        """Make sure ``conn`` is never reused: close it and stop its statement on the server
        (MySQL/MariaDB). Returns within about ``timeout``; a stop still running then goes on
        in the background, and the pool hands ``conn`` and its slot to ``take_over``."""
        driver = _driver(conn)
        if not self._config.db_type.is_mysql_family:
            await self._close_pg(driver)
            await self._invalidate(conn)
            return
        thread = None if driver is None else backend_id(driver, self._config.db_type)
        if thread is None:
            await self._invalidate(conn)
            return

        # The connection stops sending now (its session ends as soon as its statement does),
        # but the pool's record of it stays checked out until the session is gone: invalidated
        # earlier, SQLAlchemy would hand the record to the next checkout (the killer's own,
        # first of all), which would open a new session next to this one.
        closed = _hang_up(driver)
        task = asyncio.create_task(self._stop(conn, thread, closed))
        self._stops[conn] = task
        task.add_done_callback(lambda _: self._stops.pop(conn, None))
        with suppress(TimeoutError):
            async with asyncio.timeout(self._timeout):
                await asyncio.shield(task)
            return
        log.info("the server has not confirmed the statement stopped yet; its slot stays "
                 "held until it does", extra={"pool": self._config.pool_name})

    def take_over(self, conn: AsyncConnection, release: Callable[[], None]) -> bool:
        """While the stop of ``conn``'s statement runs: it closes ``conn`` and frees its slot
        (``release``) when done, and this returns True; otherwise False (nothing taken)."""
        task = self._stops.get(conn)
        if task is None or task.done():
            return False
        task.add_done_callback(lambda _: release())
        return True

    async def aclose(self, grace: float) -> None:
        """Give running stops up to ``grace`` seconds, then cancel them (shutdown)."""
        tasks = list(self._stops.values())
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=max(grace, 0.0))
        self._closing = True
        if self._killer is not None:
            late.add(self._killer)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=self._timeout)

    async def _stop(self, conn: AsyncConnection, thread: int,
                    closed: asyncio.Future[bool] | None) -> None:
        victim = _Victim(conn, thread, asyncio.get_running_loop().create_future(), closed)
        self._victims[conn] = victim
        if closed is not None:  # the session may end by itself before any kill
            closed.add_done_callback(lambda _: self._arrived.set())
        self._arrived.set()
        self._start_killer()
        try:
            await victim.ended
        finally:
            self._victims.pop(conn, None)
            if closed is not None:
                closed.cancel()  # given up on: the socket is closed outright
            await self._invalidate(conn)  # its record goes back to the pool, empty

    def _start_killer(self) -> None:
        if self._killer is None and not self._closing:
            self._killer = asyncio.create_task(self._kill_all())
            self._killer.add_done_callback(self._killer_ended)

    def _killer_ended(self, _: asyncio.Task[None]) -> None:
        self._killer = None
        if any(not v.gone for v in self._victims.values()):  # came as it was ending
            self._start_killer()

    async def _kill_all(self) -> None:
        """Take a slot (``_slot``), kill every victim until none is left, then free it. A slot
        that comes after
        a session's own limit has fired is still used: the statement may outlast that limit,
        and ``KILL QUERY`` on a session already gone costs one round trip."""
        lender = await self._slot()
        if lender is not None:
            lender.lends_slot = True
            await self._invalidate(lender.conn)
        try:
            if not any(not v.gone for v in self._victims.values()):
                return  # none left (their stops cancelled): no session opened for nothing
            async with AsyncExitStack() as stack:
                async with asyncio.timeout(self.hard_limit):
                    # failed mid-kill: never reset, never reused
                    killer = await stack.enter_async_context(self._borrow())
                await self._kill_until_none_left(killer)
        except Exception as exc:
            log.warning("stopping a statement on the server failed",
                        extra={"pool": self._config.pool_name, "error": type(exc).__name__})
            for victim in list(self._victims.values()):
                _end(victim)
        finally:
            if lender is None:
                self._gate.release()
            else:
                _end(lender, slot_free=True)

    async def _slot(self) -> _Victim | None:
        """A slot for the killer: the gate's next (None), or a victim's, whose record is then
        reopened: the first whose session the server closed (its statement over, so it has
        left its slot), else after ``slot_wait`` the oldest."""
        acquire = asyncio.ensure_future(self._gate.acquire(self.slot_wait, first=True))
        try:
            while not acquire.done():
                self._arrived.clear()
                if ended := next((v for v in self._victims.values() if _closed(v)), None):
                    return ended
                waker = asyncio.ensure_future(self._arrived.wait())
                await asyncio.wait({acquire, waker}, return_when=asyncio.FIRST_COMPLETED)
                waker.cancel()
        finally:
            if not acquire.done():
                acquire.cancel()  # the gate passes on a slot handed to a cancelled waiter
        if (failed := acquire.exception()) is None:
            return None
        if not isinstance(failed, GateTimeout):
            raise failed
        oldest = next((v for v in self._victims.values() if not v.gone), None)
        if oldest is not None:
            log.warning("no slot came free to stop a statement: every slot holds one "
                        "awaiting its kill; it is stopped from its own slot",
                        extra={"pool": self._config.pool_name})
        return oldest

    async def _kill_until_none_left(self, killer: Any) -> None:
        """``KILL QUERY`` each victim on ``killer`` as it comes, and end each one once its
        session is gone: its close seen, or (unwatched) no longer listed by the server; or
        ``hard_limit`` after its kill."""
        loop = asyncio.get_running_loop()
        pause = _GONE_POLL[0]
        while live := [v for v in self._victims.values() if not v.gone]:
            self._arrived.clear()
            for victim in live:
                if victim.killed_at is None:
                    victim.killed_at = loop.time()
                    if not await self._round_trip(_kill_query(killer, victim.thread)):
                        _end(victim)  # "Unknown thread id": already gone
            waiting = {v.thread: v for v in live if not v.gone}
            if not waiting:
                continue
            listed = await self._round_trip(_listed(killer, list(waiting)))
            for thread, victim in waiting.items():
                if thread not in listed:
                    _end(victim)
                elif loop.time() - (victim.killed_at or 0.0) > self.hard_limit:
                    log.warning("a killed statement has not ended on the server; its slot "
                                "is freed", extra={"pool": self._config.pool_name})
                    _end(victim)
            if any(not v.gone for v in waiting.values()):
                with suppress(TimeoutError):  # a new victim wakes the killer at once
                    async with asyncio.timeout(pause):
                        await self._arrived.wait()
                pause = min(pause * 2, _GONE_POLL[1])

    async def _round_trip(self, step: Awaitable[T]) -> T:
        async with asyncio.timeout(self.hard_limit):
            return await step

    async def _close_pg(self, driver: Any | None) -> None:
        """asyncpg's graceful close: Terminate, then wait for the server to hang up, which it
        does once the backend has exited (its session is gone)."""
        if driver is None or driver.is_closed():
            return
        with suppress(Exception):
            await driver.close(timeout=self._timeout)

    async def _invalidate(self, conn: AsyncConnection) -> None:
        with suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await conn.invalidate()


def _end(victim: _Victim, *, slot_free: bool = False) -> None:
    """The victim's statement is gone (or given up on): its slot may be freed, unless the
    killer still works in it (``slot_free`` when the killer has ended)."""
    victim.gone = True
    if (slot_free or not victim.lends_slot) and not victim.ended.done():
        victim.ended.set_result(None)


async def _listed(driver: Any, threads: list[int]) -> set[int]:
    """Which of ``threads`` the server still lists."""
    ids = ", ".join(str(int(t)) for t in threads)
    sql = f"SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN ({ids})"
    found = await adapter_of(driver).fetch(driver, sql, None, limit=len(threads) + 1)
    return {int(row[0]) for row in found.rows}


def _closed(victim: _Victim) -> bool:
    return (not victim.gone and victim.closed is not None and victim.closed.done()
            and not victim.closed.cancelled() and victim.closed.result())


def _hang_up(driver: Any) -> asyncio.Future[bool] | None:
    adapter = adapter_of(driver)
    if isinstance(adapter, MySqlAdapter):
        return adapter.hang_up(driver)
    return None


async def _kill_query(driver: Any, thread: int) -> bool:
    """``KILL QUERY``; False when the thread has already ended ("Unknown thread id": the
    driver closes a connection whose read was cancelled, and the server ends its thread as
    soon as the statement stops)."""
    return await adapter_of(driver).cancel(driver, thread)
