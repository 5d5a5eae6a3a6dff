"""A short in-process history of every live pool, for the dashboard and
``GET /api/external-db-connections/pool-status/history``.

Every ``period`` seconds (5 s by default) the sampler reads each live pool's snapshot and its
running totals from ``PoolMetrics`` and appends one sample to that pool's ring buffer: open,
active, idle and waiting connections, the maximum, and over the interval since the previous
sample the query rate, the error rate and the acquire-wait p99 (estimated from the wait
histogram's buckets, as Prometheus's ``histogram_quantile`` does). A ring holds ``window``
seconds (15 minutes by default) in preallocated typed arrays: ~9.5 KiB per pool, fixed, so
memory is bounded by the number of live pools. Values are stored as the API gives them
(milliseconds, rounded), so answering is copying arrays out, not a loop per value.

A pool's history goes when the pool goes (evicted, deleted, service stopped): the history
lists the same pools as ``/pool-status``. A pool rebuilt or reconfigured under the same id
keeps its history (a counter that went backwards restarts its rate from zero).

The sampler is a background loop of its own (the housekeeper's period is the health-check
interval, far too slow for this) that follows the housekeeper's rules: it never dies (each
round catches everything), runs on a monotonic clock, and takes its period, clocks and
sleep from the caller, so tests drive it by hand.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.pools.metrics import TIME_BUCKETS, PoolCounters
from app.pools.stats import PoolSnapshot

__all__ = [
    "COLUMNS",
    "CounterSource",
    "HistoryRing",
    "HistorySampler",
    "PoolHistory",
    "interval_rates",
    "wait_quantile",
]

log = logging.getLogger(__name__)

# Column name (the API's camelCase) and its array type: 'q' int64, 'i' int32, 'd' float64.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("at", "q"),  # wall clock, epoch milliseconds
    ("open", "i"),
    ("active", "i"),
    ("idle", "i"),
    ("waiting", "i"),
    ("max", "i"),
    ("waitP99Ms", "d"),  # NaN when nothing waited for a connection in the interval
    ("queriesPerSecond", "d"),  # NaN on a pool's first sample (no interval yet)
    ("errorsPerSecond", "d"),
)


class HistoryRing:
    """The last ``capacity`` samples of one pool, in preallocated typed arrays."""

    __slots__ = ("_columns", "_next", "_size", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("a history ring needs room for at least one sample")
        self.capacity = capacity
        self._columns: tuple[array[Any], ...] = tuple(
            array(code, [0]) * capacity for _, code in COLUMNS)
        self._next = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, values: Sequence[float]) -> None:
        """One sample, its values in ``COLUMNS`` order; the oldest goes when full."""
        for column, value in zip(self._columns, values, strict=True):
            column[self._next] = value
        self._next = (self._next + 1) % self.capacity
        self._size = min(self._size + 1, self.capacity)

    def columns(self, since: float | None = None) -> dict[str, list[float]]:
        """Every column oldest first, keeping samples taken at or after ``since`` (epoch ms)."""
        start, size, end = (self._next - self._size) % self.capacity, self._size, self._next
        if since is not None:
            at = self._columns[0]
            while size and at[start] < since:  # samples are in time order: drop the old end
                start, size = (start + 1) % self.capacity, size - 1
        wraps = size and start >= end
        return {name: (column[start:] + column[:end] if wraps else column[start:start + size])
                .tolist() for (name, _), column in zip(COLUMNS, self._columns, strict=True)}

    @property
    def nbytes(self) -> int:
        """Bytes this ring holds (the object and its arrays)."""
        return sys.getsizeof(self) + sys.getsizeof(self._columns) + sum(
            sys.getsizeof(column) for column in self._columns)

    def __repr__(self) -> str:
        return f"<HistoryRing {self._size}/{self.capacity}>"


def wait_quantile(deltas: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile in seconds of the waits counted in ``deltas`` (per bucket of
    ``TIME_BUCKETS`` then +Inf), interpolated inside its bucket; None when nothing waited.
    A quantile in the +Inf bucket is reported as the highest finite bound."""
    total = sum(deltas)
    if total <= 0:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for upper, count in zip(TIME_BUCKETS, deltas, strict=False):
        if count and seen + count >= rank:
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
        lower = upper
    return float(TIME_BUCKETS[-1])


@dataclass(frozen=True, slots=True)
class IntervalRates:
    queries_per_second: float
    errors_per_second: float
    wait_p99_seconds: float | None


def _delta(now: int, before: int) -> int:
    return now - before if now >= before else now  # went backwards: the counter restarted


def interval_rates(before: PoolCounters, now: PoolCounters, seconds: float) -> IntervalRates:
    """Query rate, error rate and acquire-wait p99 between two readings ``seconds`` apart."""
    span = max(seconds, 1e-9)
    waits = [_delta(n, b) for n, b in zip(now.wait_counts, before.wait_counts, strict=True)]
    if sum(now.wait_counts) < sum(before.wait_counts):
        waits = list(now.wait_counts)
    return IntervalRates(
        queries_per_second=_delta(now.queries, before.queries) / span,
        errors_per_second=_delta(now.errors, before.errors) / span,
        wait_p99_seconds=wait_quantile(waits, 0.99),
    )


class SnapshotSource(Protocol):
    """Lists the live pools' snapshots (the ``PoolManager``)."""

    def snapshots(self) -> Sequence[PoolSnapshot]: ...


class CounterSource(Protocol):
    """A pool's running totals (``PoolMetrics``)."""

    def counters(self, connection_id: int) -> PoolCounters: ...


@dataclass(slots=True)
class PoolHistory:
    """One live pool's identity and its samples (``HistoryRing.columns``)."""

    connection_id: int
    connection_name: str
    db_type: str
    samples: dict[str, list[float]]


@dataclass(slots=True)
class _Track:
    name: str
    db_type: str
    ring: HistoryRing
    counters: PoolCounters
    taken: float  # monotonic time of the previous sample


class HistorySampler:
    """Samples every live pool each ``period`` seconds in ONE background task."""

    def __init__(
        self,
        pools: SnapshotSource,
        counters: CounterSource,
        *,
        period: float = 5.0,
        window: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._pools = pools
        self._counters = counters
        self.period = period
        self.window = window
        self.capacity = max(1, math.ceil(window / period))
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._tracks: dict[int, _Track] = {}
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def __repr__(self) -> str:
        return (f"<HistorySampler period={self.period}s pools={len(self._tracks)} "
                f"rounds={self.rounds}>")

    def start(self) -> None:
        """Start the background task (idempotent); needs a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="dbpool-history")

    async def aclose(self) -> None:
        """Stop the task and wait for it."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        deadline = self._clock()
        while True:
            try:
                self.sample_once()
            except Exception:  # the loop must outlive any bug in one round
                log.exception("pool history sample failed")
            deadline += self.period
            if deadline < self._clock():  # fell behind (a stalled loop): skip, do not burst
                deadline = self._clock() + self.period
            await self._sleep(max(0.0, deadline - self._clock()))

    def sample_once(self) -> None:
        """One sample of every live pool; the history of pools that went is dropped."""
        now, at = self._clock(), self._wall()
        live: dict[int, _Track] = {}
        for snap in self._pools.snapshots():
            cid = snap.connection_id
            counters = self._counters.counters(cid)
            track = self._tracks.get(cid)
            if track is None:
                track = _Track(snap.connection_name, snap.db_type, HistoryRing(self.capacity),
                               counters, now)
                rates = IntervalRates(math.nan, math.nan, None)
            else:
                rates = interval_rates(track.counters, counters, now - track.taken)
                track.counters, track.taken = counters, now
                track.name, track.db_type = snap.connection_name, snap.db_type
            p99 = rates.wait_p99_seconds
            track.ring.append((
                round(at * 1000), snap.open, snap.checked_out, snap.checked_in, snap.waiting,
                snap.max_connections, math.nan if p99 is None else round(p99 * 1000, 3),
                round(rates.queries_per_second, 3), round(rates.errors_per_second, 3),
            ))
            live[cid] = track
        self._tracks = live
        self.rounds += 1

    def history(self, connection_id: int | None = None,
                seconds: float | None = None) -> list[PoolHistory]:
        """The samples of every live pool (or one), oldest first, optionally only the last
        ``seconds``; ordered by connection id."""
        since = None if seconds is None else (self._wall() - seconds) * 1000
        ids = sorted(self._tracks) if connection_id is None else [connection_id]
        out = []
        for cid in ids:
            track = self._tracks.get(cid)
            if track is not None:
                out.append(PoolHistory(cid, track.name, track.db_type, track.ring.columns(since)))
        return out

    @property
    def nbytes(self) -> int:
        """Bytes held by the rings of every pool tracked now."""
        return sum(track.ring.nbytes for track in self._tracks.values())

    @property
    def pools(self) -> int:
        return len(self._tracks)
