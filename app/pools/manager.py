"""The set of live pools: connection id -> ``ManagedPool`` (a ``PoolCluster`` of them when the
registration has replicas), built lazily, single flight; and :meth:`PoolManager.run`, the one
call a route makes to run a request's work on a registration (``app.pools.execute``).

Decisions (which pool is current, which are stale) are taken under one ``asyncio.Lock``;
I/O (asking the registry, disposing engines) happens outside it. A replaced pool is
closed in the background once its in-flight work finishes, so a config change never
cuts a running request short.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from app.domain import ConfigResolver, ConnectionConfig, DbType
from app.pools.cluster import NodeRef, PoolCluster, Target
from app.pools.execute import Work, measured
from app.pools.gate import FairGate
from app.pools.managed_pool import ManagedPool
from app.pools.recorder import NOP, MetricsRecorder
from app.pools.stats import PoolSnapshot
from app.settings import Settings
from app.tracing import NO_TRACING, Tracing

__all__ = ["AnyPool", "PoolManager"]

AnyPool = ManagedPool | PoolCluster
"""A registration's pool: one node's, or a cluster of node pools when it has replicas."""

log = logging.getLogger(__name__)

T = TypeVar("T")

_BUILD_ATTEMPTS = 3


class PoolManager:
    """Owns every ``ManagedPool`` of this process."""

    def __init__(
        self,
        resolver: ConfigResolver,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        metrics: MetricsRecorder = NOP,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._resolver = resolver
        self._metrics = metrics
        self._tracing = tracing
        self._settings = settings
        self._clock = clock
        self._lock = asyncio.Lock()
        self._pools: dict[int, AnyPool] = {}
        self._building: dict[int, asyncio.Task[AnyPool]] = {}
        self._gates: dict[int, FairGate] = {}
        self._generations: dict[int, int] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False

    async def get(self, connection_id: int) -> AnyPool:
        """The pool for ``connection_id``, built on first use (one build however many ask)."""
        pool = self._pools.get(connection_id)
        if pool is not None:
            log.debug("pool reused", extra={"connection_id": connection_id})
        else:
            async with self._lock:
                pool = self._pools.get(connection_id)
                build = self._builder(connection_id) if pool is None else None
            if build is not None:
                # Shielded: a cancelled first caller must not cancel everyone's build.
                pool = await asyncio.shield(build)
        assert pool is not None
        pool.touch()
        return pool

    async def run(
        self,
        connection_id: int,
        work: Work[T],
        *,
        operation: str,
        statements: Sequence[str] = (),
        target: Target = "auto",
        read: bool | Callable[[DbType], bool] = False,
    ) -> tuple[T, NodeRef | None]:
        """``work`` on one connection of the registration's pool, and which node answered
        (``None`` for a single-node registration: its one node, no routing, no analysis).
        With replicas, ``target`` and ``read`` (a flag, or asked of the analyser only when
        needed) pick the node. A connection found dead before anything was sent is replaced
        once; failures are logged and counted, the work traced as ``operation`` on
        ``statements`` (``execute.measured``)."""
        pool = await self.get(connection_id)
        on_node = measured(work, self._tracing, operation, statements)
        if isinstance(pool, ManagedPool):
            return await pool.run(lambda conn: on_node(pool, conn)), None
        reads = read(pool.config.db_type) if callable(read) else read
        return await pool.route(on_node, target=target, read=reads)

    def _builder(self, connection_id: int) -> asyncio.Task[AnyPool]:
        task = self._building.get(connection_id)
        if task is None:
            task = asyncio.create_task(self._build(connection_id))
            self._building[connection_id] = task
            task.add_done_callback(lambda t: self._forget_build(connection_id, t))
        return task

    def _forget_build(self, connection_id: int, task: asyncio.Task[AnyPool]) -> None:
        if self._building.get(connection_id) is task:
            del self._building[connection_id]
        if not task.cancelled():
            task.exception()  # retrieved: waiters got it; keep asyncio from logging it again

    async def _build(self, connection_id: int) -> AnyPool:
        for attempt in range(1, _BUILD_ATTEMPTS + 1):
            generation = self._generations.get(connection_id, 0)
            config = await self._resolver.resolve(connection_id)
            async with self._lock:
                if self._closed:
                    raise RuntimeError("the pool manager is closed")
                if generation != self._generations.get(connection_id, 0) and (
                    attempt < _BUILD_ATTEMPTS
                ):
                    continue  # invalidated while we read the registry: read it again
                pool = self._new_pool(config)
                self._pools[connection_id] = pool
            log.info(
                "pool created",
                extra={"connection_id": config.id, "db_type": config.db_type.value,
                       "max_connections": config.max_connections,
                       "nodes": 1 + len(config.replicas)},
            )
            return pool
        raise AssertionError("unreachable")  # pragma: no cover

    async def invalidate(self, connection_id: int) -> None:
        """Config changed or deleted: new requests rebuild; in-flight ones finish first."""
        async with self._lock:
            self._generations[connection_id] = self._generations.get(connection_id, 0) + 1
            pool = self._pools.pop(connection_id, None)
        self._forget_metrics(connection_id)
        if pool is not None:
            log.info("pool invalidated", extra={"connection_id": connection_id})
            self._close_later(pool, grace=_in_flight_bound(pool))

    async def evict(self, connection_id: int) -> None:
        """Dispose an idle pool now (the housekeeper's idle-TTL eviction)."""
        async with self._lock:
            pool = self._pools.get(connection_id)
            if pool is None or not pool.is_idle(0):
                return  # a request arrived since the decision: keep the pool
            del self._pools[connection_id]
        self._forget_metrics(connection_id)
        await pool.aclose(self._settings.shutdown_grace_seconds)
        self._forget_gate(connection_id)

    async def rebuild(self, connection_id: int) -> None:
        """Replace an unhealthy pool with a fresh one on the same config."""
        async with self._lock:
            old = self._pools.get(connection_id)
            if old is None:
                return
            new = self._new_pool(old.config, recreations=old.recreations + 1)
            new.mark_degraded(old.snapshot().last_health_check_at)
            self._pools[connection_id] = new
        self._metrics.count_recreation(old.config)
        log.warning("unhealthy pool rebuilt", extra={"connection_id": connection_id,
                                                     "recreations": new.recreations})
        self._close_later(old, grace=_in_flight_bound(old))

    def _refused(self, pool: AnyPool) -> None:
        """The allowlist refused a new connection of ``pool``: drop it (once), so the next
        request builds afresh from the registry and is checked again. Synchronous (no await
        between the decision and the change), so no lock is needed."""
        cid = pool.config.id
        if self._pools.get(cid) is not pool:
            return
        del self._pools[cid]
        self._generations[cid] = self._generations.get(cid, 0) + 1
        self._forget_metrics(cid)
        self._close_later(pool, grace=_in_flight_bound(pool))

    async def sync_versions(self) -> None:
        """Invalidate pools whose registry row changed or went (edits by other replicas)."""
        versions = await self._resolver.config_versions()
        async with self._lock:
            stale = [
                cid for cid, pool in self._pools.items()
                if versions.get(cid) != pool.config.config_version
            ]
        for cid in stale:
            await self.invalidate(cid)

    def _new_pool(self, config: ConnectionConfig, *, recreations: int = 0) -> AnyPool:
        """A pool for ``config`` (call under the lock). A single-node pool shares the
        connection's admission gate with the generation it replaces."""
        if config.replicas:
            return PoolCluster(config, self._settings, clock=self._clock,
                               recreations=recreations, metrics=self._metrics,
                               on_refused=self._refused, tracing=self._tracing)
        return ManagedPool(config, self._settings, clock=self._clock, recreations=recreations,
                           metrics=self._metrics, on_refused=self._refused,
                           tracing=self._tracing, gate=self._gate_for(config))

    def pools(self) -> list[AnyPool]:
        return list(self._pools.values())

    def snapshots(self) -> list[PoolSnapshot]:
        return [pool.snapshot() for pool in self._pools.values()]

    def snapshot(self, connection_id: int) -> PoolSnapshot | None:
        pool = self._pools.get(connection_id)
        return pool.snapshot() if pool is not None else None

    async def aclose(self) -> None:
        """Close every pool (waiting up to the shutdown grace), and any still closing."""
        async with self._lock:
            self._closed = True
            pools = list(self._pools.values())
            self._pools.clear()
            builds = list(self._building.values())
        for build in builds:
            build.cancel()
        grace = self._settings.shutdown_grace_seconds
        await asyncio.gather(
            *(pool.aclose(grace) for pool in pools), *self._closing, return_exceptions=True
        )

    def _forget_metrics(self, connection_id: int) -> None:
        self._metrics.forget(connection_id)

    def _gate_for(self, config: ConnectionConfig) -> FairGate:
        """The connection's one admission gate, shared by its pool generations (call under
        the lock): a replaced pool's in-flight work and its successor share the budget."""
        gate = self._gates.get(config.id)
        if gate is None:
            gate = FairGate(config.max_connections, self._settings.max_waiting_per_pool)
            self._gates[config.id] = gate
        elif gate.capacity != config.max_connections:
            gate.resize(config.max_connections)
        return gate

    def _forget_gate(self, connection_id: int) -> None:
        gate = self._gates.get(connection_id)
        unused = gate is not None and not gate.in_use and not gate.waiting
        if unused and connection_id not in self._pools and connection_id not in self._building:
            del self._gates[connection_id]

    def _close_later(self, pool: AnyPool, *, grace: float) -> None:
        task = asyncio.create_task(pool.aclose(grace))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
        task.add_done_callback(lambda _: self._forget_gate(pool.config.id))

    def __repr__(self) -> str:
        return f"<PoolManager pools={len(self._pools)} closing={len(self._closing)}>"


def _in_flight_bound(pool: AnyPool) -> float:
    """How long in-flight work on ``pool`` can legitimately take: a wait plus a statement."""
    return pool.config.connection_timeout + pool.config.query_timeout + 1.0
