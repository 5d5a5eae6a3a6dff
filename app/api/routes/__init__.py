"""Every router of the service, in the order they are mounted.

Order matters: routers with fixed paths under ``/api/external-db-connections`` (such as
``/pool-status``) come before ``connections``, whose ``/{connection_id}`` would otherwise
claim them and answer 422 for a non-numeric id. ``queries`` comes first: routes are matched
one by one on every request, and ``/query`` is the one called most.
"""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import connections, dashboard, health, metrics, pools, queries

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = (
    queries.router,
    pools.router,
    metrics.router,
    connections.router,
    health.router,
    dashboard.router,
)
