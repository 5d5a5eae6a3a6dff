"""Stopping a running statement on the server, from outside its connection.

The connection running the statement is busy (or broken by a cancelled read), so the
cancel travels on a short-lived side connection with the same credentials:
PostgreSQL ``pg_cancel_backend(pid)`` (allowed for one's own role), MySQL/MariaDB
``KILL QUERY <thread id>``. Every step is bounded in time; failing to cancel is
logged, never raised: the caller discards the connection either way.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiomysql
import asyncpg
import pymysql
from pymysql.constants import ER

from app.domain import ConnectionConfig, DbType
from app.pools.engine_factory import connect_args

__all__ = ["backend_id", "cancel_on_server"]

log = logging.getLogger(__name__)

DEFAULT_CANCEL_TIMEOUT = 3.0


def backend_id(driver_connection: Any, db_type: DbType) -> int | None:
    """The server's id for this connection: PostgreSQL backend pid, MySQL thread id."""
    try:
        if db_type is DbType.POSTGRESQL:
            return int(driver_connection.get_server_pid())
        thread_id = driver_connection.server_thread_id
        return int(thread_id[0] if isinstance(thread_id, tuple) else thread_id)
    except Exception:  # a driver without the attribute: the server-side limit still holds
        return None


async def cancel_on_server(
    config: ConnectionConfig, backend: int | None, *, within: float = DEFAULT_CANCEL_TIMEOUT
) -> bool:
    """Cancel whatever ``backend`` is running; True when the server accepted the cancel."""
    if backend is None:
        return False
    try:
        async with asyncio.timeout(within):
            if config.db_type is DbType.POSTGRESQL:
                return await _pg_cancel(config, backend)
            return await _mysql_kill_query(config, backend)
    except Exception as exc:
        log.warning(
            "cancelling a statement on the server failed",
            extra={"connection_id": config.id, "error": type(exc).__name__},
        )
        return False


async def _pg_cancel(config: ConnectionConfig, pid: int) -> bool:
    args = dict(connect_args(config))
    args.pop("prepared_statement_cache_size", None)  # SQLAlchemy's, not asyncpg's
    # Its own application_name: the pool's name counts only the pool's connections.
    args["server_settings"] = {"application_name": f"{config.pool_name}/cancel"}
    conn = await asyncpg.connect(**args)
    try:
        return bool(await conn.fetchval("SELECT pg_cancel_backend($1)", pid))
    finally:
        conn.terminate()


async def _mysql_kill_query(config: ConnectionConfig, thread_id: int) -> bool:
    args = connect_args(config)
    conn = await aiomysql.connect(
        host=config.host,
        port=config.port,
        user=config.username,
        db=config.database,
        password=args["password"],
        connect_timeout=args["connect_timeout"],
        ssl=args.get("ssl"),
        charset="utf8mb4",
        local_infile=False,
    )
    try:
        async with conn.cursor() as cur:
            await cur.execute("KILL QUERY %s", (int(thread_id),))
    except pymysql.err.OperationalError as exc:
        if exc.args[:1] != (ER.NO_SUCH_THREAD,):
            raise
        # "Unknown thread id": the connection, and its statement with it, has already ended.
        # The driver closes a connection whose read was cancelled (a client hung up), and
        # the server ends the thread as soon as its statement stops: nothing is left to kill.
    finally:
        conn.close()
    return True
