"""Lending below SQLAlchemy's wrappers: connections stay checked out of the engine's pool for
their whole life and are lent to one holder at a time.

SQLAlchemy's per-checkout machinery (a greenlet hop each way, the checkout / checkin / reset
events, a new ``Connection`` and pool fairy) then runs once per connection lifetime instead
of once per request. A lend is a pop from the idle stack; a return is the session reset
(``session_reset.SessionReset``, run straight on the driver connection, when
``session_state.needs_reset`` says so) and a push.

SQLAlchemy still owns, opens, validates, recycles, invalidates and closes every connection:

- An idle connection the lender cannot vouch for without a round trip (``trusted`` fails:
  no sign of life within ``VALIDATE_AFTER``, or its socket is closed) or older than
  ``pool_recycle`` goes back to SQLAlchemy's pool, and the holder checks one out there: the
  checkout event pings (a dead one is replaced silently) and ``pool_recycle`` replaces an old
  one, exactly as for any checkout.
- A connection whose reset fails, that was discarded (``invalidated``) or whose socket died
  is invalidated through SQLAlchemy, which closes it and frees its slot.
- Trimming, a closing pool and dispose hand idle connections back to SQLAlchemy's pool
  (``release``), whose own rules then close or keep them.

The idle stack is last in, first out (as ``pool_use_lifo`` is for SQLAlchemy's queue): under
light load the same few connections serve, stay within ``VALIDATE_AFTER`` (no ping) and the
surplus really sits idle, so trimming can close it. Fairness between requests is the
``FairGate``'s (first come, first served), not the stack's.

Counts stay exact: a lent connection carries ``accounting.LENT`` in its pool-record info
until it is back in the idle stack or in SQLAlchemy's pool, so ``checked out`` is what is lent
and ``idle`` what sits in either place. Every holder of a lent connection holds a gate slot,
and a holder checks a connection out of SQLAlchemy only when the idle stack is empty (checked
without an await before the checkout takes its slot), so SQLAlchemy's pool always has a slot
for it and nobody ever waits in its (unfair) queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.pools.accounting import PoolAccounting
from app.pools.session_reset import OPENED_AT, SessionReset, driver_closed, mark_alive, trusted
from app.pools.session_state import needs_reset

__all__ = ["Lender", "Lent"]

log = logging.getLogger(__name__)


@dataclass(slots=True, eq=False)
class Lent:
    """One connection checked out of SQLAlchemy's pool: the ``AsyncConnection`` holders get,
    its driver connection and its pool-record info (fixed while it stays checked out)."""

    conn: AsyncConnection
    driver: Any
    info: dict[str, Any]


class Lender:
    """The idle connections of one pool, kept checked out of its engine, and those lent."""

    def __init__(self, reset: SessionReset, accounting: PoolAccounting, *, recycle: float,
                 name: str, capacity: int) -> None:
        self._reset = reset
        self._accounting = accounting
        self._recycle = recycle
        self._name = name
        self._capacity = capacity
        self._idle: list[Lent] = []  # a stack: the most recently returned on top
        self._out: dict[AsyncConnection, Lent] = {}
        self.closed = False

    @property
    def idle(self) -> int:
        """Connections waiting in the lender (SQLAlchemy's own pool holds any others)."""
        return len(self._idle)

    def driver(self, conn: AsyncConnection) -> Any:
        """The driver connection under a lent ``conn``."""
        return self._out[conn].driver

    async def take(self) -> AsyncConnection | None:
        """An idle connection it can vouch for, or None: the holder (who holds a gate slot)
        then checks one out of SQLAlchemy's pool at once (``adopt``). Those it cannot vouch
        for go back to SQLAlchemy's pool on the way. Lending does not make a session dirty:
        what the holder sends does (``session_state``: the query runner per statement,
        SQLAlchemy's ``execute`` always)."""
        for _ in range(len(self._idle) + 4 * self._capacity):  # bounded: returns race in
            if not self._idle:
                return None
            lent = self._idle.pop()
            if trusted(lent.info, lent.driver) and not self._aged(lent):
                return self._lend(lent)
            await self._to_pool(lent)
        return None

    def adopt(self, conn: AsyncConnection) -> AsyncConnection:
        """Lend ``conn``, just checked out of SQLAlchemy's pool (checked by its checkout)."""
        sync = conn.sync_connection
        assert sync is not None
        raw = sync.connection  # the pool's proxy, already checked out: no I/O
        return self._lend(Lent(conn, raw.driver_connection, raw.info))

    def _lend(self, lent: Lent) -> AsyncConnection:
        self._accounting.lend(lent.info)
        self._out[lent.conn] = lent
        return lent.conn

    async def give_back(self, conn: AsyncConnection, *, alive: bool, keep: bool) -> None:
        """Take ``conn`` back: reset when needed (bounded), then idle; discarded instead when
        ``keep`` is false (the pool is closing), when it was invalidated or its socket died,
        or when the reset fails. ``alive``: the holder's work just had the server's answer."""
        lent = self._out.pop(conn, None)
        if lent is None:  # already discarded and forgotten (a retry on a fresh one)
            await _close_quietly(conn)
            return
        if (not keep or self.closed or conn.invalidated or conn.closed
                or driver_closed(lent.driver)):
            await self._invalidate(lent)
            return
        try:
            async with asyncio.timeout(self._reset.timeout):
                if conn.in_transaction():  # SQLAlchemy-level work (tests, monitoring)
                    await conn.rollback()
                if needs_reset(lent.info, lent.driver):
                    if not await self._reset(lent.driver, lent.info):
                        await self._invalidate(lent)  # the driver cannot reset it
                        return
                elif alive:
                    mark_alive(lent.info)
        except Exception as exc:
            log.warning("the reset on return failed; the connection is discarded",
                        extra={"pool": self._name, "error": type(exc).__name__})
            await self._invalidate(lent)
            return
        if self.closed:  # closed while the reset ran (the engine may be disposed already)
            await self._invalidate(lent)
            return
        self._accounting.returned(lent.info)
        self._idle.append(lent)

    def forget(self, conn: AsyncConnection) -> None:
        """``conn`` is someone else's to close now (a stop of its statement invalidates it
        through SQLAlchemy once the server has ended its session)."""
        self._out.pop(conn, None)

    async def discard(self, conn: AsyncConnection) -> None:
        """Invalidate a lent ``conn`` through SQLAlchemy (no reset, no reuse) and forget it."""
        lent = self._out.pop(conn, None)
        if lent is None:
            await _close_quietly(conn)
            return
        await self._invalidate(lent)

    async def release(self, pick: Callable[[Lent], bool]) -> int:
        """Hand the idle connections ``pick`` chooses back to SQLAlchemy's pool (trimming,
        closing); returns how many."""
        chosen = [lent for lent in self._idle if pick(lent)]
        if not chosen:
            return 0
        ids = {id(lent) for lent in chosen}
        self._idle = [lent for lent in self._idle if id(lent) not in ids]
        for lent in chosen:
            await self._to_pool(lent)
        return len(chosen)

    async def close(self) -> int:
        """No more idle keeping: every idle connection goes back to SQLAlchemy's pool now, and
        each lent one is discarded as it comes back."""
        self.closed = True
        return await self.release(lambda _: True)

    def _aged(self, lent: Lent) -> bool:
        opened = lent.info.get(OPENED_AT)
        return opened is None or time.time() - float(opened) > self._recycle

    async def _to_pool(self, lent: Lent) -> None:
        """Check a clean connection back in to SQLAlchemy's pool (its rules take over)."""
        self._accounting.returned(lent.info, idle_since=False)
        try:
            async with asyncio.timeout(self._reset.timeout):
                await lent.conn.close()
        except Exception as exc:
            log.warning("returning a connection to the engine's pool failed; discarded",
                        extra={"pool": self._name, "error": type(exc).__name__})
            await self._invalidate(lent)

    async def _invalidate(self, lent: Lent) -> None:
        conn = lent.conn
        with suppress(Exception):
            async with asyncio.timeout(self._reset.timeout):
                await conn.invalidate()  # closed by SQLAlchemy; its slot is freed
        await _close_quietly(conn)


async def _close_quietly(conn: AsyncConnection) -> None:
    with suppress(Exception):
        async with asyncio.timeout(1.0):
            await conn.close()
