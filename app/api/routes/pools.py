"""The pool monitor: what each live pool of THIS process holds, lends and waits for.

State is per process: each uvicorn worker or replica reports only the pools it holds (sum the
replicas for a fleet-wide view). The static ``/pool-status`` path is registered before the
``/{connection_id}`` routes (``routes/__init__.py`` mounts this router before ``connections``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic_core import to_json

from app.api.deps import ConnectionId, QueryParts
from app.api.schemas.common import Envelope, ErrorEnvelope
from app.api.schemas.history import PoolHistoryList, history_body
from app.api.schemas.pools import (
    PoolStatusList,
    PoolStatusPublic,
    pool_status_body,
    pool_status_entry,
)

__all__ = ["router"]

PREFIX = "/api/external-db-connections"

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorEnvelope, "description": "Missing or unknown bearer token"},
    404: {"model": ErrorEnvelope, "description": "No such connection (CONNECTION_NOT_FOUND)"},
    422: {"model": ErrorEnvelope, "description": "The id is not a positive integer"},
    503: {"model": ErrorEnvelope,
          "description": "No live pool and the registry cannot be reached (REGISTRY_UNAVAILABLE)"},
}

router = APIRouter(prefix=PREFIX, tags=["pools"], responses=_ERRORS)


@router.get(
    "/pool-status",
    summary="Every live pool of this process",
    description=(
        "Open, active (checked out), idle and waiting counts per pool, its state (`ok`, "
        "`degraded`, `circuit_open`, `auth_failed`; `healthy` is true exactly when `ok`), "
        "when the next circuit probe is due (`nextProbeAt`), the last connect failure's code "
        "(`lastProbeError`) and counters (`connectErrors` apart from `queryErrors`). "
        "`openConnections` matches what the database counts. Each process (worker, replica) "
        "reports only its own pools. A registration with replicas reports its figures summed "
        "over its nodes, and each node (role, host, state, counts, lag, last probe) in "
        "`nodes`; `maxConnections` bounds each node."
    ),
    response_model=Envelope[PoolStatusList],
)
async def pool_status(parts: QueryParts) -> Response:
    # Encoded once from plain dicts (the models document the shape): a scrape of hundreds
    # of pools must stay cheap on the event loop the queries share.
    data = pool_status_body(parts.pools.snapshots())
    body = {"success": True, "data": data, "message": f"{data['totalPools']} connection pools"}
    return Response(to_json(body), media_type="application/json")


@router.get(
    "/pool-status/history",
    summary="The last minutes of every live pool",
    description=(
        "One sample per interval (`DBPOOL_HISTORY_INTERVAL_SECONDS`, 5 s) for the last "
        "`DBPOOL_HISTORY_WINDOW_SECONDS` (900 s): open, active, idle, waiting and max "
        "connections, acquire-wait p99, query and error rates; column-wise, oldest first. "
        "A pool's history goes with the pool. `connectionId` keeps one pool (none when it has "
        "no live pool), `seconds` only the most recent samples."
    ),
    response_model=Envelope[PoolHistoryList],
)
async def pool_history(
    parts: QueryParts,
    connection_id: Annotated[
        int | None, Query(alias="connectionId", gt=0, le=2**63 - 1, description="One pool only")
    ] = None,
    seconds: Annotated[
        float | None, Query(gt=0, le=86400, description="Only samples this recent")
    ] = None,
) -> Response:
    history = parts.history
    pools = history.history(connection_id, seconds)
    data = history_body(pools, interval=history.period, window=history.window,
                        memory_bytes=history.nbytes)
    body = {"success": True, "data": data, "message": f"history of {len(pools)} pools"}
    return Response(to_json(body, inf_nan_mode="null"), media_type="application/json")


@router.get(
    "/{connection_id}/pool-status",
    summary="One connection's pool",
    description=(
        "Its pool-status entry, or `data: null` when the connection exists but this process "
        "holds no pool for it (never used, or evicted after idling)."
    ),
    response_model=Envelope[PoolStatusPublic | None],
)
async def one_pool_status(
    connection_id: ConnectionId, parts: QueryParts
) -> Response:
    snap = parts.pools.snapshot(connection_id)
    if snap is None:
        await parts.repository.get(connection_id)  # raises ConnectionNotFound (404) for unknown ids
        body: dict[str, Any] = {
            "success": True, "data": None,
            "message": f"connection {connection_id} has no live pool",
        }
    else:
        body = {"success": True, "data": pool_status_entry(snap),
                "message": f"pool of connection {connection_id}"}
    return Response(to_json(body), media_type="application/json")
