"""Idle-connection upkeep for one pool: close the surplus and the dead, open the minimum.

Both go through the pool's gate with ``try_acquire`` only, so they use free slots and
never make a request wait: a connection taken out for closing holds a gate slot until it
is closed and its pool slot freed, and no admitted request can then find SQLAlchemy's
queue empty and stall there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import greenlet_spawn

from app.pools.accounting import IDLE_SINCE, PoolAccounting
from app.pools.gate import FairGate
from app.pools.queue_pool import TrimmableQueuePool
from app.pools.session_reset import peer_closed

__all__ = ["IdleKeeper"]

log = logging.getLogger(__name__)


class IdleKeeper:
    """Trims and fills one engine's pool (the housekeeper calls it through ManagedPool)."""

    def __init__(
        self,
        queue: TrimmableQueuePool,
        gate: FairGate,
        accounting: PoolAccounting,
        *,
        name: str,
        close_timeout: float,
        connect_timeout: float,
        clock: Callable[[], float],
    ) -> None:
        self._queue = queue
        self._gate = gate
        self._accounting = accounting
        self._name = name
        self._close_timeout = close_timeout
        self._connect_timeout = connect_timeout
        self._clock = clock

    async def trim(self, idle_timeout: float, keep: int) -> int:
        """Close idle connections the server dropped, then those idle longer than
        ``idle_timeout`` while more than ``keep`` are open; returns how many closed."""
        closed = await self._close_idle(peer_closed, self._queue.size())
        cutoff = self._clock() - idle_timeout
        closed += await self._close_idle(
            lambda record: float(record.info.get(IDLE_SINCE, 0.0)) <= cutoff,
            self._accounting.open - keep,
        )
        if closed:
            log.debug("idle connections closed", extra={"pool": self._name, "closed": closed})
        return closed

    async def fill(self, minimum: int, stop: Callable[[], bool]) -> int:
        """Open connections until ``minimum`` are open; returns how many it opened."""
        opened = 0
        while not stop() and self._accounting.open < minimum:
            if not self._gate.try_acquire():
                break
            try:
                async with asyncio.timeout(self._connect_timeout):
                    added = await greenlet_spawn(self._queue.open_idle)
            except Exception as exc:
                log.warning("opening a minimum connection failed",
                            extra={"pool": self._name, "error": type(exc).__name__})
                break
            finally:
                self._gate.release()
            if not added:
                break
            opened += 1
        return opened

    async def close_all(self) -> int:
        """Close every idle connection now, without taking gate slots: only for a pool that
        admits nobody any more (being closed), so no request can be looking for them."""
        return await self._close(self._queue.take_idle(lambda _: True, self._queue.size()))

    async def _close_idle(self, pick: Callable[[ConnectionPoolEntry], bool], limit: int) -> int:
        slots = 0
        while slots < limit and self._gate.try_acquire():
            slots += 1
        taken = self._queue.take_idle(pick, slots)
        for _ in range(slots - len(taken)):
            self._gate.release()
        return await self._close(taken, self._gate.release)

    async def _close(
        self, taken: list[ConnectionPoolEntry], done: Callable[[], None] = lambda: None
    ) -> int:
        """Close taken records one by one; ``done()`` after each (its gate slot, if any)."""
        closed = 0
        try:
            while taken:
                record = taken.pop()
                try:
                    async with asyncio.timeout(self._close_timeout):
                        await greenlet_spawn(self._queue.close_taken, record)
                    closed += 1
                except Exception:
                    self._accounting.forget(record)
                finally:
                    done()
        finally:
            for record in taken:  # interrupted: let go of the rest without waiting
                self._accounting.forget(record)
                self._queue.drop_taken(record)
                done()
        return closed
