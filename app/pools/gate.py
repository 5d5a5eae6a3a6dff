"""A fair (first come, first served) admission gate in front of one engine's pool.

SQLAlchemy's async queue pool wakes waiters in no particular order under contention, so
a request could wait far longer than ``connection_timeout`` while later ones get served.
The gate admits at most ``capacity`` holders and queues the rest in arrival order.

A released slot is handed straight to the oldest waiter (``in_use`` does not drop), so
no newcomer can overtake the queue. A waiter cancelled or timed out at the moment it was
handed a slot passes the slot on, so no slot ever leaks.

One gate serves one registered connection across pool generations (the pool manager hands
a rebuilt pool its predecessor's gate), so a pool still finishing its in-flight work and
its replacement together never hold more than ``capacity`` connections. ``resize`` follows a
changed ``maxConnections``; holders beyond a lowered capacity give their slots up on release.

``acquire(timeout, first=True)`` queues ahead of every request (in arrival order among such
waiters) and is never refused for a full queue: the pool uses it for the connection that
stops a statement on the server, which frees a slot as soon as it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["FairGate", "GateFull", "GateTimeout"]


class GateFull(Exception):
    """``max_waiting`` requests are already queued; raised at once."""


class GateTimeout(Exception):
    """No slot became free within the timeout."""


class FairGate:
    """FIFO admission for ``capacity`` concurrent holders, at most ``max_waiting`` queued."""

    def __init__(self, capacity: int, max_waiting: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._max_waiting = max(0, max_waiting)
        self._in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._first: deque[asyncio.Future[None]] = deque()  # served before ``_waiters``

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        """Slots held now (a slot handed to a waiter that has not resumed yet counts)."""
        return self._in_use

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot only if one is free and nobody is queued (never overtakes)."""
        if self._in_use < self._capacity and not self._waiters and not self._first:
            self._in_use += 1
            return True
        return False

    async def acquire(self, timeout: float, *, first: bool = False) -> None:  # noqa: ASYNC109
        """Wait for a slot in arrival order (``first``: ahead of every request, never refused
        for a full queue).

        ``GateFull`` at once when the queue is full, ``GateTimeout`` after ``timeout``.
        """
        if self.try_acquire():
            return
        queue = self._first if first else self._waiters
        if not first and len(self._waiters) >= self._max_waiting:
            raise GateFull(f"{len(self._waiters)} requests already waiting")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            self._abandon(waiter, queue)
            if isinstance(exc, TimeoutError):
                raise GateTimeout(f"no slot within {timeout:g} s") from None
            raise

    def release(self) -> None:
        """Give a slot back: to the oldest live waiter if any (and the slot is within the
        capacity), else to the free count."""
        if self._in_use <= 0:
            raise RuntimeError("release() without a matching acquire()")
        if self._in_use <= self._capacity and self._hand_over():
            return  # the slot moved to a waiter; in_use unchanged
        self._in_use -= 1

    def resize(self, capacity: int) -> None:
        """Change the capacity: free slots go to waiters at once; a lowered capacity takes
        effect as holders release."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        while self._in_use < self._capacity and self._hand_over():
            self._in_use += 1

    def _hand_over(self) -> bool:
        for queue in (self._first, self._waiters):
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return True
        return False

    def _abandon(self, waiter: asyncio.Future[None], queue: deque[asyncio.Future[None]]) -> None:
        if waiter.done() and not waiter.cancelled():
            # The slot was handed over just as we gave up: pass it on, never leak it.
            self.release()
            return
        waiter.cancel()
        with contextlib.suppress(ValueError):  # already popped by release()
            queue.remove(waiter)

    def __repr__(self) -> str:
        return (
            f"<FairGate in_use={self._in_use}/{self._capacity} "
            f"waiting={len(self._waiters)}/{self._max_waiting}>"
        )
