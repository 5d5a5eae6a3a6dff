"""A registration with replicas: one ``ManagedPool`` per node, composed, routed, never shrunk.

    route(target, read) ─> candidates ─> node.run(work)   (each node: own gate, own breaker)
                            │  primary: the node the servers call primary (newest promotion)
                            │  replica: usable replicas, least busy per weight, lag bounded
                            └─ a read whose node cannot even lend a connection (nothing was
                               sent) moves on to the next candidate, the primary last

Roles and lag come from the servers (``roles.probe_role``): asked before the first request,
on every monitor round (``health_check``), and at once (at most once a second) when the
primary cannot be reached or no node is known in the role a request needs; so a promoted
standby becomes the write target within one round, with no registry change. A node that
fails is skipped while its circuit is open and used again as soon as its breaker closes; no
node is ever removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, Literal, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import DbAuthFailed, DbUnavailable
from app.pools.managed_pool import ManagedPool
from app.pools.recorder import NOP, MetricsRecorder
from app.pools.roles import NodeRole, RoleReport, probe_role
from app.pools.stats import NodeSnapshot, PoolSnapshot, cluster_snapshot
from app.settings import Settings
from app.tracing import NO_TRACING, Tracing

__all__ = ["NodeRef", "PoolCluster", "Target"]

log = logging.getLogger(__name__)

T = TypeVar("T")
Target = Literal["primary", "replica", "auto"]
NodeWork = Callable[[ManagedPool, AsyncConnection], Awaitable[T]]

# A monitor round waits this long for the nodes' probes; slower ones finish in the background
# (a black-holed node must not stall the housekeeper, whose own bound is 0.5 s at least).
PROBE_WAIT_SECONDS = 0.4
# Requests that find no node in the role they need, or an unreachable primary, have the
# nodes asked again at most this often.
REPROBE_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class NodeRef:
    """Which node answered: its id (``node0`` ...) and the role it had when routed to."""

    id: str
    role: NodeRole


@dataclass(slots=True)
class _Node:
    pool: ManagedPool
    role: NodeRole = "unknown"
    lag: float | None = None
    primary_since: float = 0.0  # monotonic time it was seen becoming primary (0: from the start)
    probed_at: datetime | None = None
    probe: asyncio.Task[None] | None = field(default=None, repr=False)


class PoolCluster:
    """The nodes of one registration; same surface as ``ManagedPool`` for the manager and the
    housekeeper, plus :meth:`route`."""

    def __init__(
        self,
        config: ConnectionConfig,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        recreations: int = 0,
        metrics: MetricsRecorder = NOP,
        on_refused: Callable[[PoolCluster], None] | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.config = config
        self._clock = clock

        def refused(_node: ManagedPool) -> None:
            # A node's address left the allowlist: the whole registration is built again.
            if on_refused is not None:
                on_refused(self)

        self._nodes = [
            _Node(ManagedPool(node, settings, clock=clock, recreations=recreations,
                              metrics=metrics, on_refused=refused, tracing=tracing))
            for node in config.nodes()
        ]
        self._max_lag = config.max_replica_lag_seconds
        self._discovery: asyncio.Task[None] | None = None
        self._reprobed_at = -REPROBE_SECONDS
        self.recreations = recreations
        self.created_at = datetime.now(UTC)

    # -- routing -----------------------------------------------------------------------

    async def route(
        self, work: NodeWork[T], *, target: Target, read: bool
    ) -> tuple[T, NodeRef]:
        """``work`` on a connection of the node ``target`` and ``read`` pick (see module doc),
        and which node that was. Raises ``DbUnavailable`` when no node fits: a write with no
        reachable primary fails fast rather than waiting."""
        if self._discovery is None:
            self._discovery = asyncio.create_task(self._probe_all())
        if not self._discovery.done():
            await asyncio.shield(self._discovery)
        try:
            candidates = self._candidates(target, read)
        except DbUnavailable:
            # A role nobody is known to have yet (every node was down when asked): ask the
            # nodes with no known role again, at most once a second, before failing.
            if not await self._reprobe_unknown():
                raise
            candidates = self._candidates(target, read)
        for index, node in enumerate(candidates):
            attempt = _Attempt(node.pool, work)
            try:
                return await node.pool.run(attempt), NodeRef(node.pool.config.node, node.role)
            except (DbUnavailable, DbAuthFailed):
                if not attempt.reached and node.role == "primary":
                    # The primary cannot be reached: perhaps a failover. Ask every node now
                    # (in the background, at most once a second) rather than at the next
                    # monitor round, so a promoted standby takes the next write.
                    self._reprobe(self._nodes)
                if attempt.reached or index == len(candidates) - 1:
                    raise
                log.info("node unusable; trying the next", extra={
                    "connection_id": self.config.id, "node": node.pool.config.node})
        raise AssertionError("unreachable")  # pragma: no cover

    def _candidates(self, target: Target, read: bool) -> list[_Node]:
        if target == "primary" or (target == "auto" and not read):
            return [self._primary()]
        replicas = self._replicas()
        if target == "replica":
            if not replicas:
                raise self._unavailable("no replica is usable (stopped, circuit open, or past "
                                        "maxReplicaLagSeconds); send target=auto to use the "
                                        "primary")
            return replicas
        try:
            return [*replicas, self._primary()]
        except DbUnavailable:
            if replicas:
                return replicas
            raise

    def _primary(self) -> _Node:
        """The write target: of the nodes that say they are primary, the reachable one most
        recently promoted (a standby promoted while the old primary still runs wins)."""
        primaries = [n for n in self._nodes if n.role == "primary"]
        if not primaries:
            raise self._unavailable("no node is known to be the primary (roles: "
                                    f"{self._roles()}); writes need a reachable primary")
        return max(primaries, key=lambda n: (not n.pool.circuit_open, n.primary_since))

    def _replicas(self) -> list[_Node]:
        """Usable replicas, best first: within the lag bound, circuit closed before open (an
        open one is still tried last, so its breaker's probe can close it), least busy per
        weight, ties shuffled."""
        usable = [n for n in self._nodes if n.role == "replica" and self._fresh(n)]
        return sorted(usable, key=lambda n: (
            n.pool.circuit_open,
            (n.pool.checked_out + n.pool.waiting + 1) / n.pool.config.weight,
            random.random(),  # noqa: S311 - load spreading, not security
        ))

    def _fresh(self, node: _Node) -> bool:
        if self._max_lag is None:
            return True
        return node.lag is not None and node.lag <= self._max_lag

    def _roles(self) -> str:
        return ", ".join(f"{n.pool.config.node}={n.role}" for n in self._nodes)

    def _unavailable(self, message: str) -> DbUnavailable:
        return DbUnavailable(message, details={"roles": {n.pool.config.node: n.role
                                                          for n in self._nodes}},
                             retry_after=1.0)

    # -- discovery -----------------------------------------------------------------------

    async def _probe_all(self) -> None:
        await self._probe_nodes(wait=None)

    async def _reprobe_unknown(self) -> bool:
        probes = self._reprobe([n for n in self._nodes if n.role == "unknown"])
        if not probes:
            return False
        await asyncio.wait(probes)
        return True

    def _reprobe(self, nodes: list[_Node]) -> list[asyncio.Task[None]]:
        """Start a probe of each of ``nodes`` (none running twice), at most once a second
        whoever asks; returns the probes, or nothing when it is too soon."""
        now = self._clock()
        if not nodes or now - self._reprobed_at < REPROBE_SECONDS:
            return []
        self._reprobed_at = now
        for node in nodes:
            if node.probe is None or node.probe.done():
                node.probe = asyncio.create_task(self._probe(node))
        return [n.probe for n in nodes if n.probe is not None]

    async def _probe_nodes(self, *, wait: float | None) -> None:
        """Ask every node its role and lag (one probe per node at a time); wait at most
        ``wait`` seconds for the answers (``None``: the slowest connect bound)."""
        for node in self._nodes:
            if node.probe is None or node.probe.done():
                node.probe = asyncio.create_task(self._probe(node))
        tasks = [n.probe for n in self._nodes if n.probe is not None]
        await asyncio.wait(tasks, timeout=wait)

    async def _probe(self, node: _Node) -> None:
        try:
            report = await probe_role(self.config.db_type, node.pool.inspect)
        except Exception as exc:
            # Class name only: a driver's message may quote connection details.
            log.info("node role probe failed", extra={
                "connection_id": self.config.id, "node": node.pool.config.node,
                "error": type(exc).__name__})
            return
        if report is not None:
            self._apply(node, report)

    def _apply(self, node: _Node, report: RoleReport) -> None:
        if report.role == "primary" and node.role == "replica":
            node.primary_since = self._clock()
        if report.role != node.role:
            log.warning("node role changed", extra={
                "connection_id": self.config.id, "node": node.pool.config.node,
                "was": node.role, "now": report.role})
        node.role, node.lag = report.role, report.lag_seconds
        node.probed_at = datetime.now(UTC)

    # -- the housekeeper's surface ----------------------------------------------------------

    def touch(self) -> None:
        for node in self._nodes:
            node.pool.touch()

    async def health_check(self, within: float | None = None) -> bool:
        """Check every node and ask its role and lag again. Always True: a failing node is
        skipped by routing and reported (its circuit opens and its prober follows it back),
        never a reason to rebuild the other nodes. Each node's check is bounded by ``within``."""
        await asyncio.gather(*(n.pool.health_check(within) for n in self._nodes))
        await self._probe_nodes(wait=PROBE_WAIT_SECONDS)
        return True

    async def trim_idle(self, idle_timeout: float) -> int:
        closed = await asyncio.gather(*(n.pool.trim_idle(idle_timeout) for n in self._nodes))
        return sum(closed)

    async def fill_min(self) -> int:
        return sum(await asyncio.gather(*(n.pool.fill_min() for n in self._nodes)))

    def is_idle(self, ttl: float) -> bool:
        return all(n.pool.is_idle(ttl) for n in self._nodes)

    def mark_degraded(self, last_check_at: datetime | None) -> None:
        for node in self._nodes:
            node.pool.mark_degraded(last_check_at)

    async def aclose(self, grace: float) -> None:
        for task in (self._discovery, *(n.probe for n in self._nodes)):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(n.pool.aclose(grace) for n in self._nodes))

    # -- reporting -----------------------------------------------------------------------

    def snapshot(self) -> PoolSnapshot:
        """The registration's figures summed over its nodes, each node's in ``nodes``."""
        return cluster_snapshot([self._node_snapshot(n) for n in self._nodes],
                                created_at=self.created_at, recreations=self.recreations)

    def _node_snapshot(self, node: _Node) -> NodeSnapshot:
        config = node.pool.config
        return NodeSnapshot(
            node=config.node, role=node.role, address=config.address, weight=config.weight,
            lag_seconds=None if node.lag is None else round(node.lag, 3),
            probed_at=node.probed_at, pool=node.pool.snapshot(),
        )

    def __repr__(self) -> str:
        return f"<PoolCluster {self.config.pool_name} {self._roles()}>"


class _Attempt(Generic[T]):
    """``work`` on one node, remembering whether a connection was lent at all: when not,
    nothing reached the server and the next node may be tried."""

    __slots__ = ("_pool", "_work", "reached")

    def __init__(self, pool: ManagedPool, work: NodeWork[T]) -> None:
        self._pool, self._work, self.reached = pool, work, False

    async def __call__(self, conn: AsyncConnection) -> T:
        self.reached = True
        return await self._work(self._pool, conn)
