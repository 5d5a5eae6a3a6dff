"""SQLAlchemy's asyncio queue pool, plus the two things it lacks: closing long-idle
connections and opening connections ahead of demand (``min_connections``).

Both keep QueuePool's own slot accounting (``_overflow``) exact, so ``pool_size`` stays the
hard bound on open connections: a slot is freed only after its connection is closed.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

__all__ = ["TrimmableQueuePool"]


class TrimmableQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` that can hand out idle records for closing and pre-open."""

    def take_idle(self, is_stale: Callable[[ConnectionPoolEntry], bool], limit: int) -> list[
        ConnectionPoolEntry
    ]:
        """Remove up to ``limit`` stale records from the queue (oldest first) and return them.

        Their slots stay taken until ``close_taken()`` frees them. Runs without an await, so
        no checkout can see the queue half-drained.
        """
        drained: list[ConnectionPoolEntry] = []
        while self._pool.qsize():
            drained.append(self._pool.get(False))
        drained.reverse()  # oldest first (the queue is LIFO: newest came out first)
        taken: list[ConnectionPoolEntry] = []
        for record in drained:
            if len(taken) < limit and is_stale(record):
                taken.append(record)
            else:
                self._pool.put(record, False)
        return taken

    def close_taken(self, record: ConnectionPoolEntry) -> None:
        """Close a record from ``take_idle()`` and free its slot (call in a greenlet)."""
        try:
            record.close()
        finally:
            self._dec_overflow()

    def drop_taken(self, record: ConnectionPoolEntry) -> None:
        """Free a taken record's slot after forcing its socket shut (no network wait)."""
        try:
            driver = record.driver_connection
            if driver is not None:
                force = getattr(driver, "terminate", None) or driver.close
                force()
        finally:
            self._dec_overflow()

    def open_idle(self) -> bool:
        """Open one connection straight into the queue if a slot is free (call in a greenlet)."""
        if not self._inc_overflow():
            return False
        try:
            record = self._create_connection()
        except BaseException:
            self._dec_overflow()
            raise
        self._do_return_conn(record)
        return True
