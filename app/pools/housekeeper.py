"""The housekeeper: the service's one background timer, watching every pool of this process.

Each round (every ``health_check_interval_seconds``, +/- 10 % jitter, on a monotonic clock):

1. ``manager.sync_versions()``: pools whose registry row changed are rebuilt lazily;
2. pools idle past ``pool_idle_ttl_seconds`` with nothing checked out are evicted;
3. every other pool gets a real round-trip health check (a connect when it holds no idle
   connection), all concurrently, each under its own timeout, so one dead database does not
   hold up the others; a check that cannot connect opens the pool's circuit (its prober then
   follows the database back within a second); one that connects but fails the round trip
   rebuilds the pool; healthy pools then close idle connections above their minimum and top
   up to it (a saturated pool counts as alive: its requests are the check; a pool whose
   circuit is open is checked by its own prober, more often than this loop could);
4. one status line: ``pools total=3 active=2 waiting=0``.

Every step of a round catches its own failures and the loop catches everything else, so the
housekeeper never dies; it logs and tries again next round. State is per process: each process
(each uvicorn worker or replica) watches and reports only its own pools.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from app.domain import ConnectionConfig
from app.errors import DbPoolError
from app.pools.recorder import NOP
from app.pools.stats import PoolSnapshot
from app.settings import Settings

__all__ = ["Housekeeper", "HousekeptManager", "HousekeptPool", "PruningMetrics"]

log = logging.getLogger(__name__)

JITTER = 0.10  # +/- 10 % of the period, so replicas started together do not probe in lockstep
MAX_CHECK_SECONDS = 10.0  # a liveness round trip slower than this is a failure anyway
# The outer bound's margin over the pool's own: a connection invalidated on a black-holed
# link is closed gracefully by SQLAlchemy's asyncpg adapter, shielded, for up to 2 s.
CHECK_SLACK_SECONDS = 3.0
_PROBED = frozenset({"circuit_open", "auth_failed"})  # states a pool's own prober watches


class HousekeptPool(Protocol):
    """What the housekeeper needs from one managed pool."""

    @property
    def config(self) -> ConnectionConfig: ...

    def snapshot(self) -> PoolSnapshot: ...

    async def health_check(self, within: float | None = None) -> bool: ...

    async def trim_idle(self, idle_timeout: float) -> int: ...

    async def fill_min(self) -> int: ...

    def is_idle(self, ttl: float) -> bool: ...


class HousekeptManager(Protocol):
    """What the housekeeper needs from the pool manager."""

    def pools(self) -> Sequence[HousekeptPool]: ...

    def snapshots(self) -> Sequence[PoolSnapshot]: ...

    async def sync_versions(self) -> None: ...

    async def evict(self, connection_id: int) -> None: ...

    async def rebuild(self, connection_id: int) -> None: ...


class PruningMetrics(Protocol):
    """The part of ``PoolMetrics`` the housekeeper uses (kept as a protocol: one-way imports)."""

    def count_eviction(self, config: ConnectionConfig) -> None: ...

    def retain(self, live_ids: set[int]) -> None: ...


class Housekeeper:
    """Runs :meth:`run_once` every period in ONE background task; ``start()`` / ``aclose()``."""

    def __init__(
        self,
        manager: HousekeptManager,
        settings: Settings,
        *,
        period: float | None = None,
        metrics: PruningMetrics = NOP,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._manager = manager
        self._settings = settings
        self._period = period if period is not None else settings.health_check_interval_seconds
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # completed rounds, for tests and repr

    def __repr__(self) -> str:
        running = self._task is not None and not self._task.done()
        return f"<Housekeeper period={self._period}s rounds={self.rounds} running={running}>"

    @property
    def period(self) -> float:
        return self._period

    def start(self) -> None:
        """Start the background task (idempotent); needs a running event loop."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name="dbpool-housekeeper"
            )

    async def aclose(self) -> None:
        """Stop the task and wait for it; warn if it does not stop within the grace period."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=max(self._settings.shutdown_grace_seconds, 1))
        if not done:
            log.warning("housekeeper did not stop within the shutdown grace period")
        elif not task.cancelled() and task.exception() is not None:
            log.error("housekeeper had failed", exc_info=task.exception())

    def next_delay(self) -> float:
        """One period with +/- 10 % jitter."""
        return self._period * (1 + JITTER * (2 * self._rng() - 1))

    async def _loop(self) -> None:
        deadline = self._clock() + self.next_delay()
        while True:
            await self._sleep(max(0.0, deadline - self._clock()))
            started = self._clock()
            try:
                await self.run_once()
            except Exception:  # the loop must outlive any bug in one round
                log.exception("housekeeping round failed")
            elapsed = self._clock() - started
            if elapsed > self._period:
                log.warning(
                    "housekeeping round took longer than its period",
                    extra={"seconds": round(elapsed, 1), "period": self._period},
                )
            # Periods are measured start to start; a slow round is followed by the next at once.
            deadline = started + self.next_delay()

    async def run_once(self) -> None:
        """One full round (see the module docstring). Each step catches its own failures; only
        a manager that cannot even list its pools ends the round early (the loop logs it)."""
        await self._step("sync versions", self._manager.sync_versions())
        await self._step("evict idle pools", self._evict_idle())
        pools = list(self._manager.pools())
        await asyncio.gather(*(self._tend(pool) for pool in pools))
        self._prune_metrics()
        self._log_status()
        self.rounds += 1

    async def _step(self, what: str, step: Awaitable[None]) -> None:
        try:
            await step
        except DbPoolError as exc:  # expected (the registry is down): one line, no traceback
            log.warning("housekeeping step skipped: %s: %s", what, exc.code)
        except Exception:  # one failing step must not skip the rest of the round
            log.exception("housekeeping step failed: %s", what)

    async def _evict_idle(self) -> None:
        ttl = self._settings.pool_idle_ttl_seconds
        for pool in list(self._manager.pools()):
            snap = pool.snapshot()
            if snap.checked_out or not pool.is_idle(ttl):
                continue
            cid = snap.connection_id
            await self._manager.evict(cid)
            self._metrics.count_eviction(pool.config)
            idle = round(snap.idle_seconds)
            log.info("idle pool evicted", extra={"connection_id": cid, "idle_seconds": idle})

    async def _tend(self, pool: HousekeptPool) -> None:
        """Health-check one pool; rebuild it if the check fails, else trim and top it up."""
        cid = pool.config.id
        try:
            snap = pool.snapshot()
            if snap.state in _PROBED:
                return  # its prober checks it; a rebuild would only restart the probing
            if snap.checked_out >= snap.max_connections:
                return  # saturated means busy, not dead; its requests report any failure
            if not await self._check(pool):
                if pool.snapshot().state not in _PROBED:  # not a dead database: a bad pool
                    await self._manager.rebuild(cid)  # it logs "unhealthy pool rebuilt"
                return
            async with asyncio.timeout(self._check_timeout(pool)):
                await pool.trim_idle(self._settings.connection_idle_timeout_seconds)
                await pool.fill_min()
        except Exception as exc:
            # Class name only: a driver's message may quote connection details.
            log.warning(
                "housekeeping of a pool failed",
                extra={"connection_id": cid, "error": type(exc).__name__},
            )

    async def _check(self, pool: HousekeptPool) -> bool:
        bound = self._check_timeout(pool)
        try:
            # The pool bounds its own check, so that it can tell an unreachable database
            # (its circuit opens) from a bad pool; this outer bound is only the safety net.
            async with asyncio.timeout(bound + CHECK_SLACK_SECONDS):
                return await pool.health_check(bound)
        except TimeoutError:
            log.warning("health check timed out", extra={"connection_id": pool.config.id})
        except Exception as exc:
            # Class name only: a driver's message may quote connection details.
            log.warning(
                "health check failed",
                extra={"connection_id": pool.config.id, "error": type(exc).__name__},
            )
        return False

    def _check_timeout(self, pool: HousekeptPool) -> float:
        return max(0.5, min(pool.config.connection_timeout, self._period, MAX_CHECK_SECONDS))

    def _prune_metrics(self) -> None:
        try:  # drops the series of pools that went away by any route (evicted, deleted, ...)
            self._metrics.retain({pool.config.id for pool in self._manager.pools()})
        except Exception:
            log.exception("housekeeping step failed: prune metrics")

    def _log_status(self) -> None:
        try:
            snaps = self._manager.snapshots()
        except Exception:
            log.exception("could not read pool snapshots")
            return
        active = sum(1 for s in snaps if s.checked_out)
        waiting = sum(s.waiting for s in snaps)
        # Text format renders this as "pools total=3 active=2 waiting=0"; JSON as fields.
        log.info("pools", extra={"total": len(snaps), "active": active, "waiting": waiting})
