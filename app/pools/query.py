"""Running caller SQL on one pooled connection: bounded rows, bounded time, clean return.

Statements run on the driver connection under SQLAlchemy's ``AsyncConnection`` so that
rows can be limited at the source:

- PostgreSQL (asyncpg): the statement comes from asyncpg's per-connection statement
  cache (a Parse round trip only the first time on a connection), then one Bind/Execute
  with a row limit of ``max_rows + 1`` on the unnamed portal, so the server stops
  producing rows: one round trip. Outside a transaction a statement commits on its own.
  Inside ``/transaction`` statements are prepared fresh (never a stale cached plan).
- MySQL/MariaDB: sessions run in autocommit; an unbuffered (server-side) cursor read in
  slices up to ``max_rows + 1`` rows; when there is more, the rest is never read: ``KILL
  QUERY`` stops the server and the connection is discarded (draining it would read every row).

Size: every encoded slice of rows is charged to the request's ``ResultBudget``
(``DBPOOL_MAX_RESPONSE_BYTES``, and a transaction's total-row cap). Past it the request fails
with ``RESULT_TOO_LARGE``: MySQL/MariaDB stop reading rows there (the connection is then
discarded like a truncated one); PostgreSQL has read at most ``max_rows + 1`` rows of the
statement in its one round trip, and neither their encoding nor the body is finished.

A connection found dead before anything of the request was sent (the loop saw the server
close it after checkout, or the driver refused before writing) raises ``SentNothing``;
the pool then retries once on a fresh connection. Nothing the server may have received
is ever retried.

Timeouts: the effective timeout is ``min(config.query_timeout, timeout)``, enforced by
the server's session limit (set by the engine factory) and by a client timer here. The
server's own limit leaves the connection clean (like any statement the database rejects:
rolled back, raised as a ``DatabaseError``). On the client timer's expiry, or when the
caller is cancelled (client disconnect), the statement is stopped within the pool's budget
(``cancel``): PostgreSQL through asyncpg's CancelRequest, the connection then coming back
clean; MySQL/MariaDB by ``KILL QUERY`` and discarding the connection (``discard``).

Every statement is first checked and bound by ``lanes.plan`` (one statement, no
transaction control inside ``/transaction``, read-only rules), before anything is sent.
On a ``readOnly`` connection every request runs inside a read-only transaction the caller
cannot turn writable: PostgreSQL ``BEGIN READ ONLY`` plus a ``SELECT 1`` in the same
round trip, so the snapshot exists before the caller's first statement (after it,
``SET TRANSACTION READ WRITE`` fails); MySQL/MariaDB ``START TRANSACTION READ ONLY``.

asyncpg's statement cache: a cached statement the server no longer knows (SQLSTATE 26000,
after a caller's ``DEALLOCATE``) or whose plan went stale is dropped with the rest of the
connection's cache and prepared again, once: the server refused it before running it. A
statement that wipes every prepared statement (``DEALLOCATE ALL``, ``DISCARD ALL/PLANS``)
is never cached, and clears the driver's caches right after it.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.errors import DatabaseError, DbPoolError, QueryTimeout, ResultTooLarge, ValidationFailed
from app.pools.budget import ResultBudget
from app.pools.encoding import RowFormat, coerce_pg_params, encode_rows
from app.pools.lanes import Planned, for_session, plan
from app.pools.session_reset import driver_closed, mysql_session_statements
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
    "effective_timeout",
    "run_query",
    "run_transaction",
]

Params = Mapping[str, Any] | Sequence[Any] | None
IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "READ UNCOMMITTED"]
Discard = Callable[[AsyncConnection], Awaitable[None]]
T = TypeVar("T")

# A statement the database refused or stopped at its own limit leaves the session usable;
# anything else (lost link, an unknown failure) and the connection is discarded.
_CLEAN_CODES = frozenset({"QUERY_ERROR", "READ_ONLY", "QUERY_TIMEOUT"})
_TIMEOUT_MARGIN = 1.0  # the server's own limit fires first (needs no cancel), even when busy
_MYSQL_JSON = 245
_NO_BACKSLASH_ESCAPES = 0x200  # MySQL server_status flag: the session's sql_mode has it
_MYSQL_SLICE = 128  # rows read from the wire between two budget checks
_PG_JSON = frozenset({"json", "jsonb"})
_PG_COUNT = re.compile(r"(\d+)$")
# The SELECT takes the snapshot: from then on the transaction cannot be made writable.
_PG_READ_ONLY = " READ ONLY; SELECT 1"
_PG_STALE = (asyncpg.exceptions.InvalidCachedStatementError,
             asyncpg.exceptions.InvalidSQLStatementNameError)


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
    budget: ResultBudget | None = None,
) -> QueryResult:
    """Run one statement (committed on success); at most ``max_rows`` rows come back, and
    no more than ``budget`` allows (``ResultTooLarge``)."""
    seconds = effective_timeout(config, timeout_seconds)
    runner = _Runner(conn, config, max_rows, row_format, budget, seconds)
    started = time.perf_counter()
    result = await _guarded(runner, runner.query(Statement(sql=sql, params=params)),
                            seconds, discard)
    return QueryResult(columns=result.columns, rows=result.rows, row_count=result.row_count,
                       truncated=result.truncated, duration_ms=_since(started))


async def run_transaction(
    conn: AsyncConnection,
    config: ConnectionConfig,
    statements: Sequence[Statement],
    *,
    max_rows: int,
    isolation_level: IsolationLevel | None = None,
    read_only: bool = False,
    timeout_seconds: float | None = None,
    row_format: RowFormat = "object",
    discard: Discard | None = None,
    budget: ResultBudget | None = None,
) -> TransactionResult:
    """All ``statements`` in order in one transaction, one commit; any failure rolls back all
    and the error's ``details.statementIndex`` names the statement. ``timeout_seconds`` bounds the
    whole transaction; ``budget`` the rows and bytes of all the results together;
    ``read_only`` runs it as on a ``readOnly`` connection (a read-only transaction: only reads
    and savepoints are sent, the database refuses any write)."""
    if isolation_level == "READ UNCOMMITTED" and config.db_type is DbType.POSTGRESQL:
        raise ValidationFailed("READ UNCOMMITTED is available on MySQL and MariaDB only",
                               details={"field": "isolationLevel"})
    if read_only and not config.read_only:
        config = replace(config, read_only=True)
    seconds = effective_timeout(config, timeout_seconds)
    runner = _Runner(conn, config, max_rows, row_format, budget, seconds)
    started = time.perf_counter()
    results = await _guarded(runner, runner.transaction(statements, isolation_level),
                             seconds, discard)
    return TransactionResult(results=results, duration_ms=_since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# ---- the guard: time limit, cancellation, clean return -----------------------------


async def _guarded(runner: _Runner, work: Awaitable[T], seconds: float,
                   discard: Discard | None) -> T:
    # When the session's own limit is the one that applies, let the server fire first
    # (MySQL/MariaDB sessions get the request's tighter limit too: ``_Runner.tighten``).
    server_limit = seconds >= runner.config.query_timeout or runner.config.db_type.is_mysql_family
    margin = _TIMEOUT_MARGIN if server_limit else 0.0
    try:
        async with asyncio.timeout(seconds + margin) as limit:
            result = await work
    except asyncio.CancelledError:
        await _shielded(runner.stop(discard))
        raise
    except TimeoutError:
        if not limit.expired():
            raise
        await _shielded(runner.stop(discard))
        raise QueryTimeout(f"The statement ran past its timeout of {seconds:g} s and was "
                           "cancelled", details={"timeoutSeconds": seconds}) from None
    except SentNothing:
        await _shielded((discard or _invalidate)(runner.conn))  # nothing runs on the server
        raise
    except ResultTooLarge:
        if runner.unread:  # stopped reading mid-result: rows remain on the wire
            await _shielded(runner.abandon(discard))
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
                 max_rows: int, row_format: RowFormat, budget: ResultBudget | None,
                 seconds: float) -> None:
        self.conn, self.config = conn, config
        self.max_rows, self.row_format = max_rows, row_format
        self.budget, self.seconds = budget, seconds
        self.unread = False
        self.sends = 0  # statements handed to the driver so far (each may reach the server)

    def translate(self, exc: BaseException) -> DatabaseError:
        return translate_error(exc, self.config.db_type)  # the caller's own SQL: no scrub

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
        return driver

    async def abandon(self, discard: Discard | None) -> None:
        """Stop the statement on the server, then make sure the connection is never reused."""
        await (discard or _invalidate)(self.conn)

    async def stop(self, discard: Discard | None) -> None:
        """The statement's read was cancelled (client timer, client gone). PostgreSQL: asyncpg
        sent the CancelRequest, and the reset on return waits for it: nothing to do here."""
        if self.config.db_type.is_mysql_family:
            await self.abandon(discard)

    def _plan(self, statement: Statement, driver: Any, index: int | None) -> Planned:
        """Checked and bound before anything is sent, for the session's current mode."""
        return plan(statement.sql, statement.params, self.config, index=index,
                    backslash_escapes=self._backslash_escapes(driver))

    def _backslash_escapes(self, driver: Any) -> bool:
        """Whether the session reads a backslash in ``'...'`` as an escape."""
        if self.config.db_type is DbType.POSTGRESQL:
            return bool(driver.get_settings().standard_conforming_strings == "off")
        return not getattr(driver, "server_status", 0) & _NO_BACKSLASH_ESCAPES

    async def query(self, statement: Statement) -> StatementResult:
        driver = await self._driver()
        planned = self._plan(statement, driver, None)
        postgres = self.config.db_type is DbType.POSTGRESQL
        if not postgres:
            await self._tighten(driver)
        if not self.config.read_only:
            if postgres:
                return await self._pg(driver, planned, in_transaction=False)
            return await self._mysql(driver, planned)  # autocommit: it commits on its own
        if postgres:
            return await self._pg_read_only(driver, planned)
        return await self._mysql_read_only(driver, planned)

    async def transaction(self, statements: Sequence[Statement],
                          isolation: IsolationLevel | None) -> list[StatementResult]:
        driver = await self._driver()
        planned = [self._plan(s, driver, index) for index, s in enumerate(statements)]
        if self.config.db_type is DbType.POSTGRESQL:
            return await self._pg_transaction(driver, planned, isolation)
        return await self._mysql_transaction(driver, planned, isolation)

    async def _each(self, statements: Sequence[Planned],
                    run: Callable[[Planned], Awaitable[StatementResult]]
                    ) -> list[StatementResult]:
        results = []
        for index, statement in enumerate(statements):
            try:
                result = await run(statement)
            except ResultTooLarge as exc:
                exc.details["statementIndex"] = index
                raise
            except Exception as exc:
                if isinstance(exc, TimeoutError) or (
                        isinstance(exc, DbPoolError) and not isinstance(exc, DatabaseError)):
                    raise  # ours, e.g. a statement refused by its lane: it names its index
                error = exc if isinstance(exc, DatabaseError) else self.translate(exc)
                error.details["statementIndex"] = index
                raise error from exc
            results.append(result)
        return results

    # -- PostgreSQL ------------------------------------------------------------------

    def _pg_begin(self, isolation: IsolationLevel | None) -> str:
        sql = f"BEGIN ISOLATION LEVEL {isolation}" if isolation else "BEGIN"
        return sql + _PG_READ_ONLY if self.config.read_only else sql

    async def _pg_transaction(self, pg: Any, statements: Sequence[Planned],
                              isolation: IsolationLevel | None) -> list[StatementResult]:
        self._sending()
        await pg.execute(self._pg_begin(isolation))
        try:
            results = await self._each(statements, lambda s: self._pg(pg, s, True))
        except DatabaseError:
            await _pg_rollback(pg)
            raise
        self._sending()
        await pg.execute("COMMIT")
        return results

    async def _pg_read_only(self, pg: Any, planned: Planned) -> StatementResult:
        """One statement in a read-only transaction; a stale cached statement aborts it,
        so the whole transaction is tried once more (the statement never ran)."""
        for attempt in (1, 2):
            self._sending()
            await pg.execute(self._pg_begin(None))
            try:
                result = await self._pg(pg, planned, True, cache=True)
            except _PG_STALE:
                await _pg_rollback(pg)
                if attempt == 2:
                    raise
                continue
            except Exception:
                await _pg_rollback(pg)
                raise
            self._sending()
            await pg.execute("COMMIT")
            return result
        raise AssertionError("unreachable")

    async def _pg(self, pg: Any, planned: Planned, in_transaction: bool,
                  cache: bool | None = None) -> StatementResult:
        # A statement before this one may have turned standard_conforming_strings off.
        planned = for_session(planned, self.config, self._backslash_escapes(pg))
        sql, args, wipes = planned.sql, planned.args, planned.analysis.wipes_prepared
        # In a transaction a stale cached plan would abort the whole transaction: prepare
        # afresh (unnamed). Alone, asyncpg's cache is safe: a stale plan is re-prepared.
        use_cache = (not in_transaction if cache is None else cache) and not wipes
        state = await pg._get_statement(sql, None, use_cache=use_cache)
        values = coerce_pg_params(args or [], [p.name for p in state._get_parameters()])
        attributes = state._get_attributes()
        limit = self.max_rows + 1 if attributes else 0
        try:
            rows, status = await self._pg_execute(pg, sql, state, values, limit,
                                                  retry=use_cache and not in_transaction)
        finally:
            if wipes:
                _forget_prepared(self.conn, pg)
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
        ``fetch`` does, plus the row limit); a cached statement the server calls stale or
        no longer knows (26000: a caller's DEALLOCATE) drops the connection's cache and is
        prepared again once: the server refused it before running anything."""
        self._sending()
        try:
            rows, status, _ = await pg._protocol.bind_execute(state, values, "", limit, True,
                                                               None)
        except _PG_STALE:
            _forget_prepared(self.conn, pg)
            if not retry or pg.is_in_transaction():
                raise
            fresh = await pg._get_statement(sql, None)
            rows, status, _ = await pg._protocol.bind_execute(fresh, values, "", limit, True,
                                                               None)
        if isinstance(status, bytes):
            status = status.decode()
        return rows, status or ""  # no tag when the row limit suspended the portal

    # -- MySQL / MariaDB -------------------------------------------------------------

    async def _mysql_transaction(self, driver: Any, statements: Sequence[Planned],
                                 isolation: IsolationLevel | None) -> list[StatementResult]:
        await self._tighten(driver)
        if isolation:  # applies to the next transaction: the one begun below
            self._sending()
            await _mysql_exec(driver, f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        await self._mysql_begin(driver)
        try:
            results = await self._each(statements, lambda s: self._mysql(driver, s, True))
        except DbPoolError:
            await driver.rollback()
            raise
        await driver.commit()
        return results

    async def _tighten(self, driver: Any) -> None:
        """A request timeout tighter than the connection's becomes the session's limit for
        this request (the reset on return restores it), so the server stops the statement
        itself and no ``KILL QUERY`` (another connection) is needed."""
        if self.seconds >= self.config.query_timeout:
            return
        mariadb = "mariadb" in str(driver.get_server_info()).lower()
        statements = mysql_session_statements(mariadb=mariadb, query_timeout=self.seconds,
                                              read_only=False)
        self._sending()
        await _mysql_exec(driver, statements[0])

    async def _mysql_read_only(self, driver: Any, planned: Planned) -> StatementResult:
        await self._mysql_begin(driver)
        try:
            result = await self._mysql(driver, planned)
        except DatabaseError:
            await driver.rollback()
            raise
        if not result.unread:  # rows left on the wire: the connection is discarded instead
            await driver.commit()
        return result

    async def _mysql_begin(self, driver: Any) -> None:
        """The session runs in autocommit; a read-only one gets a read-only transaction."""
        self._sending()
        if self.config.read_only:
            await _mysql_exec(driver, "START TRANSACTION READ ONLY")
        else:
            await driver.begin()

    async def _mysql(self, driver: Any, planned: Planned,
                     in_transaction: bool = False) -> StatementResult:
        # A statement before this one may have changed sql_mode (NO_BACKSLASH_ESCAPES).
        planned = for_session(planned, self.config, self._backslash_escapes(driver))
        cursor = await _ss_cursor(driver)
        self._sending()
        try:
            await cursor.execute(planned.sql, planned.args)
        except Exception as exc:
            raise self.translate(exc) from exc
        if cursor.description is None:
            count = cursor.rowcount
            await cursor.close()
            return StatementResult(columns=[], rows=[], row_count=max(count, 0), truncated=False)
        columns = [d[0] for d in cursor.description]
        json_columns = frozenset(
            i for i, d in enumerate(cursor.description) if d[1] == _MYSQL_JSON
        )
        result = await self._mysql_rows(cursor, columns, json_columns)
        if result.truncated and not in_transaction:
            # Never drained (that reads every row): killed and discarded instead. Inside a
            # transaction the work must be committed, so the rest is read and dropped.
            result.unread = self.unread = True
        else:
            await cursor.close()
        return result

    async def _mysql_rows(self, cursor: Any, columns: list[str],
                          json_columns: frozenset[int]) -> StatementResult:
        """Up to ``max_rows + 1`` rows, read and encoded slice by slice, so that a result
        past the budget stops being read at the first slice beyond it."""
        encoded: list[Any] = []
        truncated = False
        while True:
            wanted = min(_MYSQL_SLICE, self.max_rows + 1 - len(encoded))
            rows = await cursor.fetchmany(wanted)
            truncated = len(encoded) + len(rows) > self.max_rows
            kept = rows[: self.max_rows - len(encoded)] if truncated else rows
            try:
                encoded += encode_rows(columns, kept, json_columns=json_columns,
                                       row_format=self.row_format, budget=self.budget)
            except ResultTooLarge:
                self.unread = len(rows) == wanted  # the end was not reached
                raise
            if truncated or len(rows) < wanted:
                return StatementResult(columns=columns, rows=encoded, row_count=len(encoded),
                                       truncated=truncated)

    def _result(self, columns: list[str], rows: Sequence[Any],
                json_columns: frozenset[int]) -> StatementResult:
        truncated = len(rows) > self.max_rows
        kept = rows[: self.max_rows] if truncated else rows
        encoded = encode_rows(columns, kept, json_columns=json_columns,
                              row_format=self.row_format, budget=self.budget)
        return StatementResult(columns=columns, rows=encoded, row_count=len(encoded),
                               truncated=truncated)


async def _pg_rollback(pg: Any) -> None:
    """End a failed transaction; should that fail too, the reset on return finds the
    transaction still open and tries again (or the connection is discarded)."""
    with suppress(Exception):
        await pg.execute("ROLLBACK")


def _forget_prepared(conn: AsyncConnection, pg: Any) -> None:
    """The server's prepared statements are gone: forget asyncpg's and SQLAlchemy's."""
    pg._drop_local_statement_cache()
    sync = conn.sync_connection
    valid = sync is not None and not sync.invalidated and not sync.closed
    adapted = sync.connection.dbapi_connection if valid and sync is not None else None
    cache = getattr(adapted, "_prepared_statement_cache", None)
    if cache is not None:
        cache.clear()


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
