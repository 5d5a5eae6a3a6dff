"""FastAPI dependencies as ``Annotated`` aliases: the app's parts and the auth checks.

Everything is read from ``request.app.state``, set by ``main.create_app``'s lifespan;
nothing here is a module-level global. Each dependency is ``async def``: a plain ``def`` one
would be run in the thread pool, a hop that costs more than the work on the hot path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.auth import Access, authorize
from app.pools.manager import PoolManager
from app.registry.repository import ConnectionRepository
from app.settings import Settings

__all__ = [
    "AdminAccess",
    "ConnectionId",
    "PoolManagerDep",
    "QueryAccess",
    "RepositoryDep",
    "SettingsDep",
    "require_admin",
    "require_query",
]


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_repository(request: Request) -> ConnectionRepository:
    repository: ConnectionRepository = request.app.state.repository
    return repository


async def get_pool_manager(request: Request) -> PoolManager:
    manager: PoolManager = request.app.state.pool_manager
    return manager


SettingsDep = Annotated[Settings, Depends(get_settings)]
RepositoryDep = Annotated[ConnectionRepository, Depends(get_repository)]
PoolManagerDep = Annotated[PoolManager, Depends(get_pool_manager)]

# auto_error=False: our own errors (401 envelope with WWW-Authenticate) instead of FastAPI's;
# the scheme also gives /docs its "Authorize" button.
_bearer = HTTPBearer(auto_error=False, description="DBPOOL_API_KEY or DBPOOL_ADMIN_API_KEY")
_Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else credentials.credentials


async def require_query(settings: SettingsDep, credentials: _Credentials) -> None:
    """Any valid key (query or admin); no-op while auth is off."""
    authorize(settings, _token(credentials), Access.QUERY)


async def require_admin(settings: SettingsDep, credentials: _Credentials) -> None:
    """The admin key; no-op while auth is off."""
    authorize(settings, _token(credentials), Access.ADMIN)


QueryAccess = Depends(require_query)
AdminAccess = Depends(require_admin)

ConnectionId = Annotated[
    int, Path(gt=0, le=2**63 - 1, description="The registered connection's id", examples=[1])
]
