"""FastAPI dependencies: the key a route needs, which also hands the route the app's parts.

A route names what it needs once: ``parts: QueryParts`` (any valid key) or
``parts: AdminParts`` (the admin key). The middleware reads these declarations
(``access.AccessTable``) and checks the token from the headers before any body is read; the
dependency returns the ``ApiParts`` the lifespan built (``app.state.parts``).

One node instead of a tree: FastAPI solves every dependency of every request in Python, and
on the query path each extra node cost more than the pool's own work. The declaration is an
``HTTPBearer``, so ``/docs`` still shows the scheme and its "Authorize" button.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPBearer

from app.api.auth import Access
from app.pools.history import HistorySampler
from app.pools.manager import PoolManager
from app.registry.repository import ConnectionRepository
from app.settings import Settings

__all__ = [
    "AdminAccess",
    "AdminParts",
    "ApiParts",
    "BearerAuth",
    "ConnectionId",
    "QueryAccess",
    "QueryParts",
]


@dataclass(frozen=True, slots=True)
class ApiParts:
    """What the routes use, built once by the lifespan."""

    settings: Settings
    repository: ConnectionRepository
    pools: PoolManager
    history: HistorySampler


class BearerAuth(HTTPBearer):
    """Declares that a route needs ``Authorization: Bearer <key>`` with ``needed`` access
    (checked by the middleware); returns ``ApiParts``."""

    def __init__(self, needed: Access) -> None:
        super().__init__(
            auto_error=False,
            scheme_name="HTTPBearer",
            description="DBPOOL_API_KEY or DBPOOL_ADMIN_API_KEY",
        )
        self.needed = needed

    async def __call__(self, request: Request) -> ApiParts:  # type: ignore[override]
        parts: ApiParts = request.app.state.parts
        return parts


_query = Depends(BearerAuth(Access.QUERY))
_admin = Depends(BearerAuth(Access.ADMIN))

QueryParts = Annotated[ApiParts, _query]
AdminParts = Annotated[ApiParts, _admin]
# For a route that needs the check but none of the parts: ``dependencies=[QueryAccess]``.
QueryAccess = _query
AdminAccess = _admin

ConnectionId = Annotated[
    int, Path(gt=0, le=2**63 - 1, description="The registered connection's id", examples=[1])
]
