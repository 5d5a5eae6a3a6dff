"""drivers: one adapter per database driver behind the ``DriverAdapter`` seam.

Nothing outside this package touches a driver's private attribute (and nothing outside
``app.pools.queue_pool`` touches SQLAlchemy's pool internals): tests/unit/test_driver_seam.py
fails otherwise. See ``base`` for the fast / public paths and the test switch.
"""

from __future__ import annotations

from typing import Any

from app.domain import DbType
from app.pools.drivers.base import (
    FALLBACK_ENV,
    DriverAdapter,
    Fetched,
    fallback_forced,
    forget_checks,
)
from app.pools.drivers.mysql import AiomysqlAdapter, AsyncmyAdapter, MySqlAdapter
from app.pools.drivers.pg import PgAdapter

__all__ = [
    "AIOMYSQL",
    "ASYNCMY",
    "FALLBACK_ENV",
    "PG",
    "AiomysqlAdapter",
    "AsyncmyAdapter",
    "DriverAdapter",
    "Fetched",
    "MySqlAdapter",
    "PgAdapter",
    "adapter_for",
    "adapter_of",
    "fallback_forced",
    "forget_checks",
]

PG = PgAdapter()
AIOMYSQL = AiomysqlAdapter()
ASYNCMY = AsyncmyAdapter()


def adapter_for(db_type: DbType, mysql_driver: str = "aiomysql") -> PgAdapter | MySqlAdapter:
    """The adapter for a pool's driver; its private surface is checked now (once per
    process and driver), logging one warning when it falls back to the public path."""
    if db_type is DbType.POSTGRESQL:
        adapter: PgAdapter | MySqlAdapter = PG
    else:
        adapter = ASYNCMY if mysql_driver == "asyncmy" else AIOMYSQL
    _ = adapter.fast
    return adapter


def adapter_of(driver: Any) -> PgAdapter | MySqlAdapter:
    """The adapter for a driver connection (by the driver's package)."""
    package = type(driver).__module__.split(".", 1)[0]
    if package == "asyncpg":
        return PG
    return ASYNCMY if package == "asyncmy" else AIOMYSQL
