"""What the driver seam's path (fast or public, app.pools.drivers) means for a test."""

from __future__ import annotations

from app.domain import DbType
from app.pools.drivers import adapter_for


def reuses_sessions(db_type: str | DbType, driver: str = "aiomysql") -> bool:
    """Whether a returned connection is reset in place and lent again: asyncpg always; the
    MySQL drivers on their fast path only (their public path discards it on return)."""
    adapter = adapter_for(DbType(db_type), driver)
    return DbType(db_type) is DbType.POSTGRESQL or adapter.fast


def fast_path(db_type: str | DbType, driver: str = "aiomysql") -> bool:
    """Whether the driver's private (fast) surface is in use."""
    return adapter_for(DbType(db_type), driver).fast
