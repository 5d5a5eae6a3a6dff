"""Response bodies of the pool monitor (``/pool-status``), built from ``PoolSnapshot``.

Figures are this process's own pools: each uvicorn worker or replica reports only the pools it
holds, so a fleet's totals are the sum over its replicas.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import Field, PlainSerializer

from app.api.schemas.common import ApiModel
from app.pools.stats import NodeSnapshot, PoolSnapshot, PoolState

__all__ = [
    "NodeStatusPublic",
    "PoolStatsPublic",
    "PoolStatusList",
    "PoolStatusPublic",
    "pool_status_body",
    "pool_status_entry",
    "utc_millis",
]


def utc_millis(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and ``Z``: ``2025-01-13T10:00:00.000Z``."""
    if value.tzinfo is None:  # the pools stamp UTC; a naive value is taken as UTC, not local
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


UtcTime = Annotated[datetime, PlainSerializer(utc_millis, return_type=str)]


class PoolStatsPublic(ApiModel):
    """Counters since the pool was (re)built."""

    acquisitions: int
    acquire_timeouts: int
    query_errors: int
    connect_errors: int = Field(description="Connect attempts that failed (requests, checks, "
                                "probes); statement failures count in queryErrors")
    recreations: int
    avg_acquire_ms: float


class NodeStatusPublic(ApiModel):
    """One node of a registration with replicas: each has its own pool and breaker."""

    id: str = Field(description="node0: the registered host; node1...: the replicas in order")
    role: str = Field(description="primary | replica | unknown, as the server itself says")
    host: str = Field(description="host:port")
    weight: int
    state: PoolState
    healthy: bool
    active_connections: int
    idle_connections: int
    open_connections: int
    max_connections: int = Field(description="maxConnections is a per-node bound")
    waiting_requests: int
    lag_seconds: float | None = Field(
        description="Replay lag measured by the monitor (replicas); null: unknown"
    )
    last_probe_at: UtcTime | None = Field(description="Last successful role and lag probe")
    last_health_check_at: UtcTime | None
    next_probe_at: UtcTime | None = Field(description="While its circuit is open: the next "
                                          "connect probe")
    last_probe_error: str | None = Field(description="Code of its last connect failure")

    @classmethod
    def of(cls, node: NodeSnapshot) -> NodeStatusPublic:
        pool = node.pool
        return cls(
            id=node.node, role=node.role, host=node.address, weight=node.weight,
            state=pool.state, healthy=pool.healthy, active_connections=pool.checked_out,
            idle_connections=pool.checked_in, open_connections=pool.open,
            max_connections=pool.max_connections, waiting_requests=pool.waiting,
            lag_seconds=node.lag_seconds, last_probe_at=node.probed_at,
            last_health_check_at=pool.last_health_check_at, next_probe_at=pool.next_probe_at,
            last_probe_error=pool.last_probe_error,
        )


class PoolStatusPublic(ApiModel):
    """One live pool; ``openConnections`` = active + idle, as the database itself counts.
    With replicas, the figures are sums over the nodes and ``nodes`` has each one."""

    connection_id: int
    connection_name: str
    db_type: str
    active_connections: int = Field(description="Checked out now")
    idle_connections: int = Field(description="Open and waiting in the pool")
    open_connections: int
    max_connections: int
    min_connections: int
    waiting_requests: int
    state: PoolState = Field(
        description="ok | degraded (the last health check failed, or the pool has not connected "
        "yet) | circuit_open (cannot connect: requests fail fast while a background probe "
        "retries at least every DBPOOL_PROBE_MAX_INTERVAL_SECONDS) | auth_failed (the database "
        "refused the credentials: probed every DBPOOL_AUTH_RETRY_INTERVAL_SECONDS)"
    )
    healthy: bool = Field(description="True exactly when state is ok")
    last_health_check_at: UtcTime | None = Field(
        description="Last real check: the monitor's round trip, a circuit probe or a failed "
        "connect"
    )
    next_probe_at: UtcTime | None = Field(
        description="When the next circuit probe is due; null while the circuit is closed"
    )
    last_probe_error: str | None = Field(
        description="Error code of the last failed connect (e.g. DB_UNAVAILABLE, "
        "DB_AUTH_FAILED) while the pool is not ok; null once it connects"
    )
    created_at: UtcTime
    last_used_at: UtcTime
    idle_seconds: int = Field(description="Whole seconds since the pool was last used")
    stats: PoolStatsPublic
    nodes: list[NodeStatusPublic] | None = Field(
        description="Registrations with replicas: one entry per node; null otherwise"
    )

    @classmethod
    def of(cls, snap: PoolSnapshot) -> PoolStatusPublic:
        stats = snap.stats
        return cls(
            connection_id=snap.connection_id,
            connection_name=snap.connection_name,
            db_type=snap.db_type,
            active_connections=snap.checked_out,
            idle_connections=snap.checked_in,
            open_connections=snap.open,
            max_connections=snap.max_connections,
            min_connections=snap.min_connections,
            waiting_requests=snap.waiting,
            state=snap.state,
            healthy=snap.healthy,
            last_health_check_at=snap.last_health_check_at,
            next_probe_at=snap.next_probe_at,
            last_probe_error=snap.last_probe_error,
            created_at=snap.created_at,
            last_used_at=snap.last_used_at,
            idle_seconds=int(snap.idle_seconds),
            stats=PoolStatsPublic(
                acquisitions=stats.acquisitions,
                acquire_timeouts=stats.acquire_timeouts,
                query_errors=stats.query_errors,
                connect_errors=stats.connect_errors,
                recreations=stats.recreations,
                avg_acquire_ms=round(stats.avg_acquire_ms, 3),
            ),
            nodes=[NodeStatusPublic.of(n) for n in snap.nodes] if snap.nodes else None,
        )


class PoolStatusList(ApiModel):
    """Every live pool of this process; ``activePools`` have at least one connection out."""

    total_pools: int
    active_pools: int
    pools: list[PoolStatusPublic]

    @classmethod
    def of(cls, snaps: Sequence[PoolSnapshot]) -> PoolStatusList:
        ordered = sorted(snaps, key=lambda s: s.connection_id)
        return cls(
            total_pools=len(ordered),
            active_pools=sum(1 for s in ordered if s.checked_out > 0),
            pools=[PoolStatusPublic.of(s) for s in ordered],
        )


# The status route answers with plain dicts, encoded once: building and re-validating one
# model per pool cost ~40 ms at 500 pools. The models above stay the documented shape, and
# a test holds these dicts equal to their ``model_dump(mode="json", by_alias=True)``.


def pool_status_entry(snap: PoolSnapshot) -> dict[str, Any]:
    """``PoolStatusPublic.of(snap)`` as JSON-ready camelCase data, without the model."""
    stats = snap.stats
    checked, due = snap.last_health_check_at, snap.next_probe_at
    return {
        "connectionId": snap.connection_id,
        "connectionName": snap.connection_name,
        "dbType": snap.db_type,
        "activeConnections": snap.checked_out,
        "idleConnections": snap.checked_in,
        "openConnections": snap.checked_out + snap.checked_in,
        "maxConnections": snap.max_connections,
        "minConnections": snap.min_connections,
        "waitingRequests": snap.waiting,
        "state": snap.state,
        "healthy": snap.healthy,
        "lastHealthCheckAt": None if checked is None else utc_millis(checked),
        "nextProbeAt": None if due is None else utc_millis(due),
        "lastProbeError": snap.last_probe_error,
        "createdAt": utc_millis(snap.created_at),
        "lastUsedAt": utc_millis(snap.last_used_at),
        "idleSeconds": int(snap.idle_seconds),
        "stats": {
            "acquisitions": stats.acquisitions,
            "acquireTimeouts": stats.acquire_timeouts,
            "queryErrors": stats.query_errors,
            "connectErrors": stats.connect_errors,
            "recreations": stats.recreations,
            "avgAcquireMs": round(float(stats.avg_acquire_ms), 3),
        },
        "nodes": [_node_entry(n) for n in snap.nodes] if snap.nodes else None,
    }


def _node_entry(node: NodeSnapshot) -> dict[str, Any]:
    pool, probed = node.pool, node.probed_at
    checked, due = pool.last_health_check_at, pool.next_probe_at
    return {
        "id": node.node,
        "role": node.role,
        "host": node.address,
        "weight": node.weight,
        "state": pool.state,
        "healthy": pool.healthy,
        "activeConnections": pool.checked_out,
        "idleConnections": pool.checked_in,
        "openConnections": pool.checked_out + pool.checked_in,
        "maxConnections": pool.max_connections,
        "waitingRequests": pool.waiting,
        "lagSeconds": node.lag_seconds,
        "lastProbeAt": None if probed is None else utc_millis(probed),
        "lastHealthCheckAt": None if checked is None else utc_millis(checked),
        "nextProbeAt": None if due is None else utc_millis(due),
        "lastProbeError": pool.last_probe_error,
    }


def pool_status_body(snaps: Sequence[PoolSnapshot]) -> dict[str, Any]:
    """``PoolStatusList.of(snaps)`` as JSON-ready camelCase data, without the models."""
    ordered = sorted(snaps, key=lambda s: s.connection_id)
    return {
        "totalPools": len(ordered),
        "activePools": sum(1 for s in ordered if s.checked_out > 0),
        "pools": [pool_status_entry(s) for s in ordered],
    }
