"""``GET /metrics``: Prometheus text format for the pools of THIS process.

Each process (uvicorn worker, replica) exposes only its own pools; scrape every replica.
Needs the query key when auth is on.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.api.deps import QueryAccess
from app.api.schemas.common import ErrorEnvelope
from app.pools.metrics import CONTENT_TYPE, PoolMetrics

__all__ = ["router"]

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    dependencies=[QueryAccess],
    summary="Prometheus metrics",
    description=(
        "OpenTelemetry db-client pool metrics per pool (`pool_name`, `connection_id`, "
        "`db_type`) plus dbpool's own; this process's pools only."
    ),
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE: {}}},
        401: {"model": ErrorEnvelope, "description": "Missing or unknown bearer token"},
    },
)
async def metrics(request: Request) -> Response:
    pool_metrics: PoolMetrics = request.app.state.pool_metrics
    return Response(pool_metrics.render(), media_type=CONTENT_TYPE)
