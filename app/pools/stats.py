"""Frozen snapshots of one pool's state, read by the status API, metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["NodeSnapshot", "PoolSnapshot", "PoolState", "PoolStats", "cluster_snapshot"]

PoolState = Literal["ok", "degraded", "circuit_open", "auth_failed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolStats:
    """Counters since the pool was created."""

    acquisitions: int = 0
    acquire_timeouts: int = 0
    query_errors: int = 0
    connect_errors: int = 0
    recreations: int = 0
    avg_acquire_ms: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSnapshot:
    """One pool at one instant. ``checked_out`` + ``checked_in`` = connections open."""

    connection_id: int
    connection_name: str
    db_type: str
    pool_name: str
    checked_out: int
    checked_in: int
    max_connections: int
    min_connections: int
    waiting: int
    state: PoolState
    healthy: bool
    last_health_check_at: datetime | None
    created_at: datetime
    last_used_at: datetime
    idle_seconds: float
    stats: PoolStats
    next_probe_at: datetime | None = None  # while the circuit is open
    last_probe_error: str | None = None  # code of the last connect failure while not ok
    node: str = "node0"  # which node of the registration (a single-node pool is node0)
    nodes: tuple[NodeSnapshot, ...] = ()  # a cluster's nodes; its own figures are their sums

    @property
    def open(self) -> int:
        return self.checked_out + self.checked_in


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSnapshot:
    """One node of a cluster: its discovered role and lag, and its own pool's snapshot."""

    node: str
    role: str  # primary | replica | unknown (not asked yet, or unreachable since the start)
    address: str  # host:port
    weight: int
    lag_seconds: float | None
    probed_at: datetime | None  # last successful role/lag probe
    pool: PoolSnapshot


def cluster_snapshot(
    nodes: list[NodeSnapshot], *, created_at: datetime, recreations: int
) -> PoolSnapshot:
    """A registration with replicas as one pool-status entry: its nodes' figures summed (its
    ``max_connections`` too: each node's bound is the registration's), the nodes in ``nodes``."""
    pools = [n.pool for n in nodes]
    lent = sum(p.stats.acquisitions for p in pools)
    waited = sum(p.stats.avg_acquire_ms * p.stats.acquisitions for p in pools)
    checks = [p.last_health_check_at for p in pools if p.last_health_check_at is not None]
    probes = [p.next_probe_at for p in pools if p.next_probe_at is not None]
    errors = [p.last_probe_error for p in pools if p.last_probe_error is not None]
    states = {p.state for p in pools}
    first = pools[0]
    return PoolSnapshot(
        connection_id=first.connection_id,
        connection_name=first.connection_name,
        db_type=first.db_type,
        pool_name=first.pool_name,
        checked_out=sum(p.checked_out for p in pools),
        checked_in=sum(p.checked_in for p in pools),
        max_connections=sum(p.max_connections for p in pools),
        min_connections=sum(p.min_connections for p in pools),
        waiting=sum(p.waiting for p in pools),
        # Down (and left to its nodes' own probes) only when every node is.
        state=first.state if len(states) == 1 else "degraded",
        healthy=all(p.healthy for p in pools),
        last_health_check_at=max(checks) if checks else None,
        created_at=created_at,
        last_used_at=max(p.last_used_at for p in pools),
        idle_seconds=min(p.idle_seconds for p in pools),
        stats=PoolStats(
            acquisitions=lent,
            acquire_timeouts=sum(p.stats.acquire_timeouts for p in pools),
            query_errors=sum(p.stats.query_errors for p in pools),
            connect_errors=sum(p.stats.connect_errors for p in pools),
            recreations=recreations,
            avg_acquire_ms=round(waited / lent, 3) if lent else 0.0,
        ),
        next_probe_at=min(probes) if probes else None,  # the soonest of any node's
        last_probe_error=errors[0] if errors else None,
        node="cluster",
        nodes=tuple(nodes),
    )
