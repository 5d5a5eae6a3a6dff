"""Connection hygiene, attached as pool events on ``engine.sync_engine``.

- connect  (MySQL/MariaDB): detect the flavour, apply the session settings (statement
  timeout, read-only). PostgreSQL gets its settings in the startup packet instead.
- checkout: a bounded liveness ping on every reused connection; a dead one raises
  ``DisconnectionError`` so SQLAlchemy silently replaces it (our own pre-ping: SQLAlchemy's
  has no timeout, and aiomysql has no read timeout at all).
- reset (on return): nothing one request did to its session reaches the next one.
  PostgreSQL: roll back, then ``DISCARD ALL`` (startup-packet settings survive it).
  MySQL/MariaDB: ``COM_RESET_CONNECTION``, the registered schema (a ``USE`` survives the
  reset), then the charset, autocommit and session settings again (the reset restores the
  global defaults): three round trips. A failed or slow reset raises,
  and SQLAlchemy then invalidates the connection: it is discarded, never returned dirty.

Every network wait here runs under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from app.domain import ConnectionConfig

__all__ = [
    "attach_session_events",
    "hygiene_timeout",
    "mysql_session_statements",
    "peer_closed",
]

_COM_RESET_CONNECTION = 0x1F
_CONNECTED_AT = "dbpool_connected_at"
_FRESH_WINDOW = 1.0  # seconds: a connection this new is alive by definition
_MARIADB = "dbpool_mariadb"


def hygiene_timeout(config: ConnectionConfig) -> float:
    """Bound for one ping / reset / set-up round trip: short, never past connection_timeout."""
    return min(config.connection_timeout, 5.0)


def peer_closed(record: ConnectionPoolEntry) -> bool:
    """True when the socket under a pooled connection is known dead (no round trip): the
    server dropped it (``wait_timeout``, a kill, a restart) while it sat idle."""
    driver = record.driver_connection
    if driver is None:
        return True
    is_closed = getattr(driver, "is_closed", None)  # asyncpg
    if callable(is_closed):
        return bool(is_closed())
    writer = getattr(driver, "_writer", None)  # aiomysql / asyncmy keep a StreamWriter
    if writer is None:
        return True
    reader = getattr(driver, "_reader", None)
    return bool(writer.transport.is_closing() or getattr(reader, "_eof", False))


def mysql_session_statements(
    *, mariadb: bool, query_timeout: float, read_only: bool, also: tuple[str, ...] = ()
) -> list[str]:
    """The statements that give a MySQL/MariaDB session its timeout and access mode.

    MariaDB's ``max_statement_time`` is in seconds and covers every statement; MySQL's
    ``max_execution_time`` is in milliseconds and applies to SELECT only (0 = no limit).
    ``also``: further ``SET`` assignments to send in the same round trip.
    """
    if mariadb:
        timeout = f"SESSION max_statement_time = {float(query_timeout):.3f}"
    else:
        timeout = f"SESSION max_execution_time = {round(query_timeout * 1000)}"
    statements = ["SET " + ", ".join((*also, timeout))]
    if read_only:
        statements.append("SET SESSION TRANSACTION READ ONLY")
    return statements


def attach_session_events(engine: AsyncEngine, config: ConnectionConfig) -> None:
    """Register the connect / checkout / reset hooks for ``config`` on ``engine``."""
    target = engine.sync_engine
    timeout = hygiene_timeout(config)
    mysql = config.db_type.is_mysql_family

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        record.info[_CONNECTED_AT] = time.monotonic()
        if mysql:
            _guarded(dbapi_conn, lambda raw: _mysql_setup(raw, record, config), timeout)

    @event.listens_for(target, "checkout")
    def _on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        connected_at = record.info.pop(_CONNECTED_AT, None)
        if connected_at is not None and time.monotonic() - connected_at < _FRESH_WINDOW:
            return  # connected for this very checkout: skip the round trip
        try:
            _run(dbapi_conn, _mysql_ping if mysql else _pg_ping, timeout)
        except Exception as error:
            raise exc.DisconnectionError("pooled connection failed its ping") from error

    @event.listens_for(target, "reset")
    def _on_reset(dbapi_conn: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        if state.terminate_only or not state.asyncio_safe:
            return  # SQLAlchemy is about to terminate it; nothing to clean
        if mysql:
            _run(dbapi_conn, lambda raw: _mysql_reset(raw, record, config), timeout)
        else:
            dbapi_conn.rollback()  # the adapter's own transaction, if any
            _run(dbapi_conn, _pg_reset, timeout)


def _run(dbapi_conn: Any, fn: Callable[[Any], Awaitable[None]], timeout: float) -> None:
    """Run ``fn(driver_connection)`` from a sync pool event, bounded by ``timeout``."""
    adapted: AdaptedConnection = dbapi_conn

    async def bounded(raw: Any) -> None:
        async with asyncio.timeout(timeout):
            await fn(raw)

    adapted.run_async(bounded)


def _guarded(dbapi_conn: Any, fn: Callable[[Any], Awaitable[None]], timeout: float) -> None:
    """Like ``_run``, but a failure closes the fresh connection: SQLAlchemy would leak it."""
    try:
        _run(dbapi_conn, fn, timeout)
    except BaseException:
        dbapi_conn.driver_connection.close()  # sync socket close; no network wait
        raise


async def _pg_ping(raw: Any) -> None:
    await raw.execute("SELECT 1")


async def _pg_reset(raw: Any) -> None:
    if raw.is_in_transaction():  # a BEGIN sent as plain SQL
        await raw.execute("ROLLBACK")
    await raw.execute("DISCARD ALL")


async def _mysql_ping(raw: Any) -> None:
    await raw.ping(False)


def _is_mariadb(raw: Any) -> bool:
    # The handshake's server version ("10.11.6-MariaDB-...") is what SELECT VERSION() returns.
    return "mariadb" in str(raw.get_server_info()).lower()


async def _mysql_setup(raw: Any, record: ConnectionPoolEntry, config: ConnectionConfig) -> None:
    mariadb = _is_mariadb(raw)
    record.info[_MARIADB] = mariadb
    for sql in mysql_session_statements(
        mariadb=mariadb, query_timeout=config.query_timeout, read_only=config.read_only
    ):
        await raw.query(sql)


async def _mysql_reset(raw: Any, record: ConnectionPoolEntry, config: ConnectionConfig) -> None:
    # PyMySQL/aiomysql have no wrapper for COM_RESET_CONNECTION: send it by hand.
    await raw._execute_command(_COM_RESET_CONNECTION, b"")
    await raw._read_ok_packet()
    if config.database:  # the reset keeps the current schema: undo a USE
        await raw.select_db(config.database)
    # The reset restored the global charset and autocommit too: put back what the driver
    # negotiated at connect time, in the same round trip as our own settings.
    autocommit = 1 if raw.autocommit_mode else 0
    for sql in mysql_session_statements(
        mariadb=bool(record.info.get(_MARIADB, _is_mariadb(raw))),
        query_timeout=config.query_timeout,
        read_only=config.read_only,
        also=("NAMES utf8mb4", f"autocommit = {autocommit}"),
    ):
        await raw.query(sql)
