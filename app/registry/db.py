"""The registry's own database engine (SQLite for development, PostgreSQL in production)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["create_registry_engine", "create_sessionmaker", "is_sqlite"]

# Milliseconds a SQLite writer waits for another process's write lock before failing.
_SQLITE_BUSY_TIMEOUT_MS = 5000
CONNECT_TIMEOUT_SECONDS = 5.0
_WAL_ATTEMPTS = 50
_WAL_RETRY_SECONDS = 0.1


def is_sqlite(url: str) -> bool:
    """True when ``url`` points at a SQLite registry."""
    return make_url(url).get_backend_name() == "sqlite"


def create_registry_engine(url: str) -> AsyncEngine:
    """An engine for the registry at ``url``.

    ``hide_parameters`` keeps bound values (such as ciphertext) out of error messages.
    SQLite gets WAL (readers never block the writer), foreign keys and a busy timeout
    on every new connection; PostgreSQL gets a liveness ping on checkout and a bounded connect.
    """
    if is_sqlite(url):
        _quiet_aiosqlite()
        engine = create_async_engine(url, hide_parameters=True)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if make_url(url).get_driver_name() == "asyncpg":
        connect_args["timeout"] = CONNECT_TIMEOUT_SECONDS  # a black-holed registry fails soon
    return create_async_engine(
        url, hide_parameters=True, pool_pre_ping=True, connect_args=connect_args
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose objects stay readable after commit (they are copied out anyway)."""
    return async_sessionmaker(engine, expire_on_commit=False)


def _quiet_aiosqlite() -> None:
    # aiosqlite logs every statement with its parameters (ciphertext included) at DEBUG;
    # keep that out of the service's logs unless an operator set the level on purpose.
    aiosqlite_logger = logging.getLogger("aiosqlite")
    if aiosqlite_logger.level == logging.NOTSET:
        aiosqlite_logger.setLevel(logging.INFO)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        _journal_mode_wal(dbapi_connection, cursor)
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _journal_mode_wal(dbapi_connection: Any, cursor: Any) -> None:
    """WAL belongs to the file and is set once; two processes opening a new registry
    together can each find the file locked while the other switches it (SQLite does not
    wait on its busy timeout there): try again for a moment, without blocking the loop."""
    for attempt in range(1, _WAL_ATTEMPTS + 1):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:
            if "database is locked" not in str(exc) or attempt == _WAL_ATTEMPTS:
                raise
        dbapi_connection.run_async(lambda _driver: asyncio.sleep(_WAL_RETRY_SECONDS))
