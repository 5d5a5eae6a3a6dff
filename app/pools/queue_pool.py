"""SQLAlchemy's asyncio queue pool, plus the two things it lacks: closing long-idle
connections and opening connections ahead of demand (``min_connections``).

The one module that touches SQLAlchemy's pool internals (``_pool``, ``_inc_overflow``,
``_dec_overflow``, ``_create_connection``, ``_do_return_conn``). Both keep QueuePool's own
slot accounting (``_overflow``) exact, so ``pool_size`` stays the hard bound on open
connections: a slot is freed only after its connection is closed.

When the installed SQLAlchemy lacks one of them (or ``DBPOOL_DRIVER_FALLBACK`` is set: a
test switch), the public API is used after one warning: ``open_idle`` checks a
connection out and back in when none is idle (opening one), and ``take_idle`` takes
nothing: idle connections then live until ``pool_recycle`` or a failed checkout ping.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.pool import AsyncAdaptedQueuePool, ConnectionPoolEntry

from app.pools.drivers.base import confirm_surface, surface_present

__all__ = ["TrimmableQueuePool"]

_NAME = "sqlalchemy.pool"
_SURFACE = ((AsyncAdaptedQueuePool, ("_inc_overflow", "_dec_overflow", "_create_connection",
                                     "_do_return_conn")),)
_LIVE = ("_pool",)  # set in __init__: checked on the first pool built


def _fast() -> bool:
    return surface_present(_NAME, lambda: _SURFACE)


class TrimmableQueuePool(AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` that can hand out idle records for closing and pre-open."""

    def check_surface(self) -> bool:
        """Whether SQLAlchemy's internals are there (checked once per process; one warning
        when they are not)."""
        if _fast():
            confirm_surface(_NAME, ((self, _LIVE),))
        return _fast()

    def take_idle(self, is_stale: Callable[[ConnectionPoolEntry], bool], limit: int) -> list[
        ConnectionPoolEntry
    ]:
        """Remove up to ``limit`` stale records from the queue (oldest first) and return them.

        Their slots stay taken until ``close_taken()`` frees them. Runs without an await, so
        no checkout can see the queue half-drained.
        """
        if not _fast():
            return []
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
        if not _fast():
            return self._open_idle_public()
        if not self._inc_overflow():
            return False
        try:
            record = self._create_connection()
        except BaseException:
            self._dec_overflow()
            raise
        self._do_return_conn(record)
        return True

    def _open_idle_public(self) -> bool:
        """A checkout and check-in: it opens a connection only when none is idle."""
        if self.checkedin() or self.checkedout() >= self.size():
            return False
        self.connect().close()
        return True
