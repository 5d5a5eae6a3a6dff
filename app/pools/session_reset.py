"""Connection hygiene, attached as pool events on ``engine.sync_engine``.

- connect  (MySQL/MariaDB): detect the flavour, turn multi-statements off on the protocol
  (``COM_SET_OPTION``: the server then refuses ``SELECT 1; DROP ...`` even if the SQL got
  past the analyser), apply the session settings (statement timeout, read-only,
  autocommit). PostgreSQL gets its settings in the startup packet (and its extended
  protocol takes one statement per Parse anyway).
- checkout: a socket the server already closed is refused for free (``driver_closed``); a
  liveness ping runs only when the connection has shown no sign of life for
  ``VALIDATE_AFTER`` seconds (HikariCP's rule). A dead one raises ``DisconnectionError``
  so SQLAlchemy silently replaces it. The rare death the checks cannot see is caught by
  the query path, which retries only when provably nothing was sent (``SentNothing``).
  The lender (``app.pools.lender``) keeps connections checked out between requests and
  hands one out again without a round trip only while ``trusted`` holds (open, a sign of
  life within ``VALIDATE_AFTER``); any other goes back through this checkout.
- reset (on return), on demand: a connection whose session nothing could have changed
  (``session_state.needs_reset``: one plain read in autocommit, nothing reported) goes
  back with no round trip; any other gets the reset, one round trip, so that nothing one
  request did reaches the next one. The lender runs it on the driver connection when a
  request gives its connection back (``SessionReset``); the pool's reset event runs the
  same code for a connection that reaches SQLAlchemy's pool still dirty (the lender hands
  it back, trims, closes). Whether to reset at all is ONE decision,
  ``session_state.needs_reset``, asked on both paths.
  PostgreSQL: roll back if a transaction is open, then what ``DISCARD ALL`` does except
  ``DEALLOCATE ALL`` / ``DISCARD PLANS``, so the driver's prepared statements (its
  statement cache) survive; prepared statements a caller made with SQL ``PREPARE`` are
  spotted in the same round trip and deallocated one by one (a rare second trip).
  MySQL/MariaDB: ``COM_RESET_CONNECTION``, ``COM_INIT_DB`` (a ``USE`` survives the reset)
  and the session ``SET``s, pipelined in one write. A failed or slow reset raises, and
  SQLAlchemy then invalidates the connection: it is discarded, never returned dirty.
  A driver whose private surface is missing (``app.pools.drivers``) cannot reset a MySQL
  session: the connection is then invalidated on return and the next checkout opens a
  fresh one.

The driver calls themselves go through the driver's adapter (``app.pools.drivers``).

Every network wait here runs under ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine.interfaces import AdaptedConnection
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import ConnectionPoolEntry, PoolResetState

from app.domain import ConnectionConfig
from app.pools.drivers import PG, MySqlAdapter, adapter_of
from app.pools.drivers.mysql_wire import (
    COM_INIT_DB,
    COM_QUERY,
    COM_RESET_CONNECTION,
    COM_SET_OPTION,
    Pipeline,
)
from app.pools.session_state import mark_clean, mark_dirty, needs_reset

__all__ = [
    "OPENED_AT",
    "VALIDATE_AFTER",
    "SessionReset",
    "attach_session_events",
    "driver_closed",
    "hygiene_timeout",
    "mark_alive",
    "mysql_session_statements",
    "peer_closed",
    "trusted",
]

VALIDATE_AFTER = 0.5  # seconds without a sign of life before a checkout pings
OPENED_AT = "dbpool_opened_at"  # record.info: time.time() when the connection was opened
_ALIVE_AT = "dbpool_alive_at"  # record.info: monotonic time of the last proof of life
_MARIADB = "dbpool_mariadb"
_MULTI_STATEMENTS_OFF = b"\x01\x00"

# DISCARD ALL minus DEALLOCATE ALL and DISCARD PLANS; the last statement's tag says whether
# a SQL-level prepared statement exists ("SELECT 1") and needs a second trip.
_PG_RESET = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *; "
    "SELECT pg_advisory_unlock_all(); DISCARD TEMP; DISCARD SEQUENCES; "
    "SELECT 1 FROM pg_prepared_statements WHERE from_sql LIMIT 1"
)
_PG_SQL_PREPARED = "SELECT name FROM pg_prepared_statements WHERE from_sql"


def hygiene_timeout(config: ConnectionConfig) -> float:
    """Bound for one ping / reset / set-up round trip: short, never past connection_timeout."""
    return min(config.connection_timeout, 5.0)


def driver_closed(driver: Any) -> bool:
    """True when a driver connection's socket is known dead (no round trip): closed by us,
    or the server dropped it (``wait_timeout``, a kill, a restart) and the loop saw it."""
    return driver is None or adapter_of(driver).is_closed(driver)


def peer_closed(record: ConnectionPoolEntry) -> bool:
    """``driver_closed`` for a pool record."""
    return driver_closed(record.driver_connection)


def mark_alive(info: MutableMapping[str, Any]) -> None:
    """The server just answered on this connection (a reset, a ping, a statement)."""
    info[_ALIVE_AT] = time.monotonic()


def trusted(info: Mapping[str, Any], driver: Any) -> bool:
    """Whether a connection may be handed out again without the checkout's checks: its
    socket is open and it showed a sign of life within ``VALIDATE_AFTER`` (no I/O)."""
    alive_at = info.get(_ALIVE_AT)
    return (alive_at is not None and time.monotonic() - alive_at <= VALIDATE_AFTER
            and not driver_closed(driver))


def mysql_session_statements(
    *, mariadb: bool, query_timeout: float, read_only: bool, also: tuple[str, ...] = ()
) -> list[str]:
    """The statements that give a MySQL/MariaDB session its timeout and access mode.

    MariaDB's ``max_statement_time`` is in seconds and covers every statement; MySQL's
    ``max_execution_time`` is in milliseconds and applies to SELECT only (0 = no limit).
    ``also``: further ``SET`` assignments to send in the same statement.
    """
    if mariadb:
        timeout = f"SESSION max_statement_time = {float(query_timeout):.3f}"
    else:
        timeout = f"SESSION max_execution_time = {round(query_timeout * 1000)}"
    statements = ["SET " + ", ".join((*also, timeout))]
    if read_only:
        statements.append("SET SESSION TRANSACTION READ ONLY")
    return statements


class SessionReset:
    """The reset on return for one pool's sessions, built once per pool (the MySQL pipelines
    by flavour): ``await reset(driver, info)`` cleans the session in one round trip."""

    def __init__(self, config: ConnectionConfig) -> None:
        self.timeout = hygiene_timeout(config)
        self._mysql = config.db_type.is_mysql_family
        self._resets = {
            flavour: Pipeline.of(_mysql_reset_commands(flavour, config))
            for flavour in (True, False)
        }

    async def __call__(self, driver: Any, info: MutableMapping[str, Any]) -> bool:
        """Reset ``driver``'s session (unbounded: the caller bounds it by ``timeout``); False
        when the driver cannot, and the connection must then be discarded, never reused."""
        if self._mysql:
            if not await _mysql_reset(driver, info, self._resets):
                return False
        else:
            await _pg_reset(driver)
        mark_clean(info, driver)
        mark_alive(info)
        return True


def attach_session_events(engine: AsyncEngine, config: ConnectionConfig) -> None:
    """Register the connect / checkout / reset hooks for ``config`` on ``engine``."""
    target = engine.sync_engine
    timeout = hygiene_timeout(config)
    mysql = config.db_type.is_mysql_family
    # Built once per engine, by flavour (known once connected).
    setups = {
        flavour: Pipeline.of(_mysql_connect_commands(flavour, config)) for flavour in (True, False)
    }
    reset = SessionReset(config)

    @event.listens_for(target, "connect")
    def _on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        adapter_of(dbapi_conn.driver_connection).confirm(dbapi_conn.driver_connection)
        if mysql:
            _mysql(dbapi_conn.driver_connection).watch_on_cancel(dbapi_conn.driver_connection)
            _guarded(dbapi_conn, lambda raw: _mysql_setup(raw, record, setups), timeout)
        record.info[OPENED_AT] = time.time()  # SQLAlchemy's pool_recycle clock
        mark_clean(record.info, dbapi_conn.driver_connection)
        mark_alive(record.info)

    @event.listens_for(target, "checkout")
    def _on_checkout(dbapi_conn: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if driver_closed(record.driver_connection):
            raise exc.DisconnectionError("the server closed the pooled connection")
        now = time.monotonic()
        if now - record.info.get(_ALIVE_AT, 0.0) <= VALIDATE_AFTER:
            return  # it answered a moment ago: skip the round trip
        try:
            _run(dbapi_conn, _mysql_ping if mysql else _pg_ping, timeout)
        except Exception as error:
            raise exc.DisconnectionError("pooled connection failed its ping") from error
        record.info[_ALIVE_AT] = now

    @event.listens_for(target, "reset")
    def _on_reset(dbapi_conn: Any, record: ConnectionPoolEntry, state: PoolResetState) -> None:
        if state.terminate_only or not state.asyncio_safe:
            return  # SQLAlchemy is about to terminate it; nothing to clean
        if not needs_reset(record.info, record.driver_connection):
            # Clean (the lender reset it already, or nothing changed it). Not a proof of life:
            # the lender hands back the connections it cannot vouch for, to be pinged at their
            # next checkout.
            return
        if not mysql:
            dbapi_conn.rollback()  # the adapter's own transaction, if any
        outcome: list[bool] = []

        async def run(raw: Any) -> None:
            outcome.append(await reset(raw, record.info))

        _run(dbapi_conn, run, timeout)
        if not all(outcome):
            record.invalidate()  # the driver cannot reset it: closed, reopened lazily

    @event.listens_for(target, "before_cursor_execute")
    def _on_execute(conn: Any, *_: Any) -> None:
        # SQL sent through SQLAlchemy (health checks, monitor probes, anything but the query
        # runner, which vouches for what it sends): the session may carry state now.
        mark_dirty(conn.info)


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


# ---- PostgreSQL ----------------------------------------------------------------------


async def _pg_ping(raw: Any) -> None:
    await PG.ping(raw)


async def _pg_reset(raw: Any) -> None:
    await PG.reset(raw, (_PG_RESET, _PG_SQL_PREPARED))


# ---- MySQL / MariaDB -----------------------------------------------------------------


def _mysql(raw: Any) -> MySqlAdapter:
    adapter = adapter_of(raw)
    assert isinstance(adapter, MySqlAdapter)
    return adapter


async def _mysql_ping(raw: Any) -> None:
    await _mysql(raw).ping(raw)


def _is_mariadb(raw: Any) -> bool:
    # The handshake's server version ("10.11.6-MariaDB-...") is what SELECT VERSION() returns.
    return "mariadb" in str(raw.get_server_info()).lower()


def _mysql_settings(mariadb: bool, config: ConnectionConfig) -> list[tuple[int, bytes]]:
    # Autocommit on: a /query statement commits on its own (no COMMIT round trip); a
    # /transaction opens its transaction explicitly.
    statements = mysql_session_statements(
        mariadb=mariadb,
        query_timeout=config.query_timeout,
        read_only=config.read_only,
        also=("NAMES utf8mb4", "autocommit = 1"),
    )
    return [(COM_QUERY, sql.encode()) for sql in statements]


def _mysql_connect_commands(mariadb: bool, config: ConnectionConfig) -> list[tuple[int, bytes]]:
    # Multi-statements stay off for the connection's life: COM_RESET_CONNECTION keeps the
    # option (tests/integration/test_sql_lanes.py checks it after a reset).
    return [(COM_SET_OPTION, _MULTI_STATEMENTS_OFF), *_mysql_settings(mariadb, config)]


def _mysql_reset_commands(mariadb: bool, config: ConnectionConfig) -> list[tuple[int, bytes]]:
    commands = [(COM_RESET_CONNECTION, b"")]
    if config.database:  # the reset keeps the current schema: undo a USE
        commands.append((COM_INIT_DB, config.database.encode()))
    # The reset restored the global charset and autocommit too: put ours back.
    return commands + _mysql_settings(mariadb, config)


async def _mysql_setup(
    raw: Any, record: ConnectionPoolEntry, setups: dict[bool, Pipeline]
) -> None:
    mariadb = _is_mariadb(raw)
    record.info[_MARIADB] = mariadb
    await _mysql(raw).setup(raw, setups[mariadb])


async def _mysql_reset(
    raw: Any, info: MutableMapping[str, Any], resets: dict[bool, Pipeline]
) -> bool:
    mariadb = info.get(_MARIADB)
    if mariadb is None:  # set up before this process knew the flavour: ask once
        mariadb = info[_MARIADB] = _is_mariadb(raw)
    return await _mysql(raw).reset(raw, resets[bool(mariadb)])
