"""Liveness and readiness probes (no token; not under ``/api``, so no envelope).

Readiness asks only about this service's own needs: the registry answers and its schema is
at head. An unreachable *external* database never makes the service unready. The answer is
kept for ``READY_CACHE_SECONDS`` (and shared by concurrent probes), so a probe storm costs
the registry one query a second.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.registry.faults import RETRY_AFTER_SECONDS
from app.registry.migrations import schema_is_at_head

__all__ = ["ReadinessCheck", "router"]

READY_TIMEOUT_SECONDS = 5.0
READY_CACHE_SECONDS = 1.0

logger = logging.getLogger(__name__)
router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    summary="Liveness",
    description="Always 200 while the process serves HTTP.",
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def _not_ready_reason(engine: AsyncEngine) -> str | None:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            at_head = await schema_is_at_head(engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        logger.warning("readiness: registry unreachable: %s", type(exc).__name__)
        return "registry database unreachable (existing pools keep serving)"
    if not at_head:
        return "registry schema is not at head: run `dbpool migrate`"
    return None


class ReadinessCheck:
    """The registry check behind ``/readyz``, run at most once per ``ttl`` seconds."""

    def __init__(self, engine: AsyncEngine, *, ttl: float = READY_CACHE_SECONDS) -> None:
        self.engine = engine
        self._ttl = ttl
        self._lock = asyncio.Lock()
        self._checked_at = -float("inf")
        self._reason: str | None = None

    async def reason(self) -> str | None:
        """Why the service is not ready, or None."""
        async with self._lock:
            if time.monotonic() - self._checked_at >= self._ttl:
                self._reason = await _not_ready_reason(self.engine)
                self._checked_at = time.monotonic()
            return self._reason


@router.get(
    "/readyz",
    summary="Readiness",
    description=(
        "200 when the registry database answers and its schema is at the latest migration; "
        "503 with the reason otherwise. External databases do not affect readiness."
    ),
    responses={503: {"description": "Not ready; `reason` says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    check: ReadinessCheck = request.app.state.readiness
    reason = await check.reason()
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503,
                            headers={"Retry-After": str(round(RETRY_AFTER_SECONDS))})
    return JSONResponse({"status": "ready"})
