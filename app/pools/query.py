"""Running caller SQL on one pooled connection: bounded rows, bounded time, clean return.

Statements run on the driver connection under SQLAlchemy's ``AsyncConnection`` so that
rows can be limited at the source:

- PostgreSQL (asyncpg): the statement comes from asyncpg's per-connection statement
  cache (a Parse round trip only the first time on a connection), then one Bind/Execute
  with a row limit of ``max_rows + 1`` on the unnamed portal, so the server stops
  producing rows: one round trip. Outside a transaction a statement commits on its own.
  Inside ``/transaction`` statements are prepared fresh (never a stale cached plan).
- MySQL/MariaDB: sessions run in autocommit; an unbuffered (server-side) cursor,
  ``fetchmany(max_rows + 1)``; when there is more, the rest is never read: ``KILL QUERY``
  stops the server and the connection is discarded (draining it would read every row).

A connection found dead before anything of the request was sent (the loop saw the server
close it after checkout, or the driver refused before writing) raises ``SentNothing``;
the pool then retries once on a fresh connection. Nothing the server may have received
is ever retried.

Timeouts: the effective timeout is ``min(config.query_timeout, timeout)``, enforced by
the server's session limit (set by the engine factory) and by a client timer here; on
expiry, or when the caller is cancelled (client disconnect), the statement is cancelled
on the server and the connection discarded. A statement the database rejects leaves
the connection clean (rolled back) and is raised as a ``DatabaseError``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.errors import DatabaseError, DbPoolError, QueryTimeout, ValidationFailed
from app.pools.cancel import backend_id, cancel_on_server
from app.pools.encoding import RowFormat, coerce_pg_params, encode_rows
from app.pools.session_reset import driver_closed
from app.pools.stale import SentNothing, refused_before_send
from app.pools.translate import translate_error

__all__ = [
    "Discard",
    "IsolationLevel",
    "Params",
    "QueryResult",
    "Statement",
    "StatementResult",
    "TransactionResult",
    "bind_params",
    "effective_timeout",
    "run_query",
    "run_transaction",
]

Params = Mapping[str, Any] | Sequence[Any] | None
IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "READ UNCOMMITTED"]
Discard = Callable[[AsyncConnection], Awaitable[None]]
T = TypeVar("T")

# A statement the database refused leaves the session usable; anything else (lost link,
# server-side timeout, an unknown failure) and the connection is discarded.
_CLEAN_CODES = frozenset({"QUERY_ERROR", "READ_ONLY"})
_TIMEOUT_MARGIN = 0.25  # the server's own limit fires first when it is the tighter one
_MYSQL_JSON = 245
_PG_JSON = frozenset({"json", "jsonb"})
_PG_COUNT = re.compile(r"(\d+)$")
_PG_NAMED_CAST = re.compile(r"(?<![:\w]):(\w+)::")
_PG_ISOLATION = {
    "READ COMMITTED": "read_committed",
    "REPEATABLE READ": "repeatable_read",
    "SERIALIZABLE": "serializable",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One statement of a transaction."""

    sql: str
    params: Params = None


@dataclass(slots=True, kw_only=True)
class StatementResult:
    """Rows already JSON-ready; ``row_count`` is rows returned, or rows affected by a write."""

    columns: list[str]
    rows: list[Any]
    row_count: int
    truncated: bool
    # MySQL: rows remain unread on the wire, so the connection must not be reused.
    unread: bool = field(default=False, repr=False)


@dataclass(slots=True, kw_only=True)
class QueryResult:
    columns: list[str]
    rows: list[Any]
    row_count: int
    truncated: bool
    duration_ms: float


@dataclass(slots=True, kw_only=True)
class TransactionResult:
    results: list[StatementResult]
    duration_ms: float


def effective_timeout(config: ConnectionConfig, requested: float | None) -> float:
    """The tighter of the connection's query timeout and the request's own."""
    return config.query_timeout if requested is None else min(config.query_timeout, requested)


async def run_query(
    conn: AsyncConnection,
    config: ConnectionConfig,
    sql: str,
    params: Params = None,
    *,
    max_rows: int,
    timeout_seconds: float | None = None,
    row_format: RowFormat = "object",
    discard: Discard | None = None,
) -> QueryResult:
    """Run one statement (committed on success); at most ``max_rows`` rows come back."""
    runner = _Runner(conn, config, max_rows, row_format)
    started = time.perf_counter()
    result = await _guarded(runner, runner.query(Statement(sql=sql, params=params)),
                            effective_timeout(config, timeout_seconds), discard)
    return QueryResult(columns=result.columns, rows=result.rows, row_count=result.row_count,
                       truncated=result.truncated, duration_ms=_since(started))


async def run_transaction(
    conn: AsyncConnection,
    config: ConnectionConfig,
    statements: Sequence[Statement],
    *,
    max_rows: int,
    isolation_level: IsolationLevel | None = None,
    timeout_seconds: float | None = None,
    row_format: RowFormat = "object",
    discard: Discard | None = None,
) -> TransactionResult:
    """All ``statements`` in order in one transaction, one commit; any failure rolls back all
    and the error's ``details.statementIndex`` names the statement. ``timeout_seconds`` bounds the
    whole transaction."""
    if isolation_level == "READ UNCOMMITTED" and config.db_type is DbType.POSTGRESQL:
        raise ValidationFailed("READ UNCOMMITTED is available on MySQL and MariaDB only",
                               details={"field": "isolationLevel"})
    runner = _Runner(conn, config, max_rows, row_format)
    started = time.perf_counter()
    results = await _guarded(runner, runner.transaction(statements, isolation_level),
                             effective_timeout(config, timeout_seconds), discard)
    return TransactionResult(results=results, duration_ms=_since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# ---- parameters ----------------------------------------------------------------------


def bind_params(sql: str, params: Params, dialect: Dialect, db_type: DbType) -> tuple[str, Any]:
    """SQL and driver arguments: a mapping binds ``:name`` placeholders through SQLAlchemy
    ``text()`` (rendered in the driver's style); a sequence is the driver's own positional
    style (``$1`` / ``%s``); no parameters leave the SQL untouched (``%`` and ``:x`` too)."""
    if not params:
        return sql, None
    if not isinstance(params, Mapping):
        return sql, list(params)
    if db_type is DbType.POSTGRESQL:
        sql = _PG_NAMED_CAST.sub(r":\1 ::", sql)  # ``:id::int`` means bind, then cast
    compiled = text(sql).compile(dialect=dialect)
    names = list(compiled.positiontup or [])
    missing = sorted({name for name in names if name not in params})
    if missing:
        raise ValidationFailed(f"No value for parameter(s): {', '.join(missing)}",
                               details={"field": "params", "missing": missing})
    return compiled.string, [params[name] for name in names]


# ---- the guard: time limit, cancellation, clean return -----------------------------


async def _guarded(runner: _Runner, work: Awaitable[T], seconds: float,
                   discard: Discard | None) -> T:
    # When the session's own limit is the tighter one, let the server fire first.
    margin = _TIMEOUT_MARGIN if seconds >= runner.config.query_timeout else 0.0
    try:
        async with asyncio.timeout(seconds + margin) as limit:
            result = await work
    except asyncio.CancelledError:
        await _shielded(runner.abandon(discard))
        raise
    except TimeoutError:
        if not limit.expired():
            raise
        await _shielded(runner.abandon(discard))
        raise QueryTimeout(f"The statement ran past its timeout of {seconds:g} s and was "
                           "cancelled", details={"timeoutSeconds": seconds}) from None
    except SentNothing:
        await _shielded((discard or _invalidate)(runner.conn))  # nothing runs on the server
        raise
    except DbPoolError as exc:
        if not isinstance(exc, DatabaseError) or exc.code in _CLEAN_CODES:
            raise  # ours, raised before or after a statement that left the session clean
        if runner.refused_first_send(exc.__cause__):
            await _shielded((discard or _invalidate)(runner.conn))
            raise SentNothing("the connection was closed before the statement was sent") from exc
        await _shielded(runner.abandon(discard))
        raise
    except Exception as exc:
        if runner.refused_first_send(exc):
            await _shielded((discard or _invalidate)(runner.conn))
            raise SentNothing("the connection was closed before the statement was sent") from exc
        error = runner.translate(exc)
        if error.code not in _CLEAN_CODES:
            await _shielded(runner.abandon(discard))  # the session's state is unknown
        raise error from exc
    if runner.unread:
        await _shielded(runner.abandon(discard))
    return result


async def _shielded(work: Awaitable[None]) -> None:
    """Finish clean-up even when the caller is being cancelled (client gone)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


class _Runner:
    """One request's statements on one connection."""

    def __init__(self, conn: AsyncConnection, config: ConnectionConfig,
                 max_rows: int, row_format: RowFormat) -> None:
        self.conn, self.config = conn, config
        self.max_rows, self.row_format = max_rows, row_format
        self.backend: int | None = None
        self.unread = False
        self.sends = 0  # statements handed to the driver so far (each may reach the server)

    def translate(self, exc: BaseException) -> DatabaseError:
        return translate_error(exc, self.config.db_type,
                               secrets=[self.config.password.get_secret_value()])

    def refused_first_send(self, exc: BaseException | None) -> bool:
        """The driver refused the very first statement before writing it: nothing was sent."""
        return exc is not None and self.sends <= 1 and refused_before_send(exc)

    def _sending(self) -> None:
        self.sends += 1

    async def _driver(self) -> Any:
        sync = self.conn.sync_connection
        if sync is not None and not sync.invalidated and not sync.closed:
            raw = sync.connection  # already checked out: no I/O, no greenlet hop
        else:
            raw = await self.conn.get_raw_connection()
        driver = raw.driver_connection
        if driver_closed(driver):
            raise SentNothing("the server closed the connection before the statement was sent")
        self.backend = backend_id(driver, self.config.db_type)
        return driver

    async def abandon(self, discard: Discard | None) -> None:
        """Stop the statement on the server, then make sure the connection is never reused."""
        await cancel_on_server(self.config, self.backend)
        await (discard or _invalidate)(self.conn)

    async def query(self, statement: Statement) -> StatementResult:
        driver = await self._driver()
        if self.config.db_type is DbType.POSTGRESQL:
            return await self._pg(driver, statement, in_transaction=False)
        return await self._mysql_autocommit(driver, statement)

    async def transaction(self, statements: Sequence[Statement],
                          isolation: IsolationLevel | None) -> list[StatementResult]:
        driver = await self._driver()
        if self.config.db_type is DbType.POSTGRESQL:
            level = _PG_ISOLATION[isolation] if isolation else None
            self._sending()
            async with driver.transaction(isolation=level):
                return await self._each(statements, lambda s: self._pg(driver, s, True))
        if isolation:  # applies to the next transaction: the one begun below
            self._sending()
            await _mysql_exec(driver, f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        self._sending()
        await driver.begin()  # the session runs in autocommit
        try:
            results = await self._each(statements, lambda s: self._mysql(driver, s, True))
        except DatabaseError:
            await driver.rollback()
            raise
        await driver.commit()
        return results

    async def _each(self, statements: Sequence[Statement],
                    run: Callable[[Statement], Awaitable[StatementResult]]
                    ) -> list[StatementResult]:
        results = []
        for index, statement in enumerate(statements):
            try:
                result = await run(statement)
            except Exception as exc:
                if isinstance(exc, TimeoutError):
                    raise
                error = exc if isinstance(exc, DatabaseError) else self.translate(exc)
                error.details["statementIndex"] = index
                raise error from exc
            results.append(result)
        return results

    def _bind(self, statement: Statement) -> tuple[str, Any]:
        return bind_params(statement.sql, statement.params, self.conn.dialect,
                           self.config.db_type)

    # -- PostgreSQL ------------------------------------------------------------------

    async def _pg(self, pg: Any, statement: Statement, in_transaction: bool) -> StatementResult:
        sql, args = self._bind(statement)
        # In a transaction a stale cached plan would abort the whole transaction: prepare
        # afresh (unnamed). Alone, asyncpg's cache is safe: a stale plan is re-prepared.
        state = await pg._get_statement(sql, None, use_cache=not in_transaction)
        values = coerce_pg_params(args or [], [p.name for p in state._get_parameters()])
        attributes = state._get_attributes()
        limit = self.max_rows + 1 if attributes else 0
        rows, status = await self._pg_execute(pg, sql, state, values, limit,
                                              retry=not in_transaction)
        if not attributes:
            match = _PG_COUNT.search(status or "")
            return StatementResult(columns=[], rows=[], truncated=False,
                                   row_count=int(match.group(1)) if match else 0)
        if rows and len(rows[0]) != len(attributes):  # re-prepared after a schema change
            attributes = (await pg._get_statement(sql, None))._get_attributes()
        json_columns = frozenset(i for i, a in enumerate(attributes) if a.type.name in _PG_JSON)
        return self._result([a.name for a in attributes], rows, json_columns)

    async def _pg_execute(self, pg: Any, sql: str, state: Any, values: list[Any], limit: int,
                          *, retry: bool) -> tuple[list[Any], str]:
        """One Bind/Execute(limit)/Sync round trip on the unnamed portal (what asyncpg's own
        ``fetch`` does, plus the row limit); a cached plan the server calls stale is dropped
        and prepared again once: the server refused it before running anything."""
        self._sending()
        try:
            rows, status, _ = await pg._protocol.bind_execute(state, values, "", limit, True,
                                                               None)
        except asyncpg.exceptions.InvalidCachedStatementError:
            pg._drop_local_statement_cache()
            if not retry or pg.is_in_transaction():
                raise
            fresh = await pg._get_statement(sql, None)
            rows, status, _ = await pg._protocol.bind_execute(fresh, values, "", limit, True,
                                                               None)
        if isinstance(status, bytes):
            status = status.decode()
        return rows, status or ""  # no tag when the row limit suspended the portal

    # -- MySQL / MariaDB -------------------------------------------------------------

    async def _mysql_autocommit(self, driver: Any, statement: Statement) -> StatementResult:
        # The session is in autocommit: the statement committed itself (or failed whole).
        return await self._mysql(driver, statement)

    async def _mysql(self, driver: Any, statement: Statement,
                     in_transaction: bool = False) -> StatementResult:
        sql, args = self._bind(statement)
        cursor = await _ss_cursor(driver)
        self._sending()
        try:
            await cursor.execute(sql, args)
        except Exception as exc:
            raise self.translate(exc) from exc
        if cursor.description is None:
            count = cursor.rowcount
            await cursor.close()
            return StatementResult(columns=[], rows=[], row_count=max(count, 0), truncated=False)
        rows = await cursor.fetchmany(self.max_rows + 1)
        columns = [d[0] for d in cursor.description]
        json_columns = frozenset(
            i for i, d in enumerate(cursor.description) if d[1] == _MYSQL_JSON
        )
        result = self._result(columns, rows, json_columns)
        if result.truncated and not in_transaction:
            # Never drained (that reads every row): killed and discarded instead. Inside a
            # transaction the work must be committed, so the rest is read and dropped.
            result.unread = self.unread = True
        else:
            await cursor.close()
        return result

    def _result(self, columns: list[str], rows: Sequence[Any],
                json_columns: frozenset[int]) -> StatementResult:
        truncated = len(rows) > self.max_rows
        kept = rows[: self.max_rows] if truncated else rows
        encoded = encode_rows(columns, kept, json_columns=json_columns,
                              row_format=self.row_format)
        return StatementResult(columns=columns, rows=encoded, row_count=len(encoded),
                               truncated=truncated)


async def _ss_cursor(driver: Any) -> Any:
    """An unbuffered cursor from aiomysql or asyncmy (their ``cursor()`` differ in kind)."""
    if type(driver).__module__.startswith("asyncmy"):
        from asyncmy.cursors import SSCursor as AsyncmySSCursor

        return driver.cursor(AsyncmySSCursor)
    from aiomysql import SSCursor

    return await driver.cursor(SSCursor)


async def _mysql_exec(driver: Any, sql: str) -> None:
    cursor = await _ss_cursor(driver)
    await cursor.execute(sql)
    await cursor.close()


async def _invalidate(conn: AsyncConnection) -> None:
    with suppress(Exception):
        async with asyncio.timeout(5.0):
            await conn.invalidate()
