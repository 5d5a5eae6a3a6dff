"""Frozen snapshots of one pool's state, read by the status API, metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

__all__ = ["NodeSnapshot", "PoolSnapshot", "PoolState", "PoolStats"]

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
