"""``GET /metrics``: Prometheus text format for the pools of THIS process.

Each process (uvicorn worker, replica) exposes only its own pools; scrape every replica.
Needs the query key when auth is on.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import QueryAccess
from app.pools.metrics import PoolMetrics

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
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
async def metrics(request: Request) -> Response:
    pool_metrics: PoolMetrics = request.app.state.pool_metrics
    return Response(await pool_metrics.render_off_loop(), media_type=CONTENT_TYPE_LATEST)
