"""Running caller SQL on one pooled connection: bounded rows, bounded time, clean return.

Statements run on the driver connection under SQLAlchemy's ``AsyncConnection`` so that
rows can be limited at the source; how each dialect does it lives with its driver
adapter (``app.pools.drivers.pg_runner`` / ``mysql_runner``).

A connection found dead before anything of the request was sent (the loop saw the server
close it after checkout, or the driver refused before writing) raises ``SentNothing``;
the pool then retries once on a fresh connection. Nothing the server may have received
is ever retried.

Timeouts: the effective timeout is ``min(config.query_timeout, timeout)``, enforced by
the server's session limit (set by the engine factory) and by a client timer here; on
expiry, or when the caller is cancelled (client disconnect), the statement is cancelled
on the server and the connection discarded. A statement the database rejects leaves
the connection clean (rolled back) and is raised as a ``DatabaseError``.

Every statement is first checked and bound by ``lanes.plan`` (one statement, no
transaction control inside ``/transaction``, read-only rules), before anything is sent.
On a ``readOnly`` connection every request runs inside a read-only transaction the caller
cannot turn writable.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.errors import (
    DatabaseError,
    DbPoolError,
    QueryError,
    QueryTimeout,
    ReadOnlyViolation,
    ResultTooLarge,
    ValidationFailed,
)
from app.pools.budget import ResultBudget
from app.pools.drivers import PgAdapter, adapter_for
from app.pools.drivers.mysql_runner import MySqlRunner
from app.pools.drivers.pg_runner import PgRunner
from app.pools.encoding import RowFormat
from app.pools.runner import (
    Discard,
    IsolationLevel,
    Params,
    Runner,
    Statement,
    StatementResult,
    invalidate,
)
from app.pools.session_state import mark_dirty
from app.pools.stale import SentNothing

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

T = TypeVar("T")

# A statement the database refused or stopped at its own limit leaves the session usable;
# anything else (lost link, an unknown failure) and the connection is discarded.
_CLEAN_CODES = frozenset({"QUERY_ERROR", "READ_ONLY", "QUERY_TIMEOUT"})
_TIMEOUT_MARGIN = 1.0  # the server's own limit fires first (needs no cancel), even when busy


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
    runner = _runner(conn, config, max_rows, row_format, budget, seconds)
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
    runner = _runner(conn, config, max_rows, row_format, budget, seconds)
    started = time.perf_counter()
    results = await _guarded(runner, runner.transaction(statements, isolation_level),
                             seconds, discard)
    return TransactionResult(results=results, duration_ms=_since(started))


def _since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


# ---- the guard: time limit, cancellation, clean return -----------------------------


async def _guarded(runner: Runner, work: Awaitable[T], seconds: float,
                   discard: Discard | None) -> T:
    try:
        return await _bounded(runner, work, seconds, discard)
    except BaseException as exc:
        if not _plain_refusal(runner, exc):
            mark_dirty(runner.conn)  # the session's state is unknown: reset on return
        raise


def _plain_refusal(runner: Runner, exc: BaseException) -> bool:
    """A failure that leaves the session as it was: the database refused the statement
    (it ended its own implicit or read-only transaction; an open one is seen at return),
    or our own lane refused it before anything was sent."""
    if isinstance(exc, QueryError):
        return True
    return isinstance(exc, ValidationFailed | ReadOnlyViolation) and runner.sends == 0


async def _bounded(runner: Runner, work: Awaitable[T], seconds: float,
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
        await _shielded(invalidate(runner.conn))  # nothing runs on the server: no kill
        raise
    except ResultTooLarge:
        if runner.unread:  # stopped reading mid-result: rows remain on the wire
            await _shielded(runner.abandon(discard))
        raise
    except DbPoolError as exc:
        if not isinstance(exc, DatabaseError) or exc.code in _CLEAN_CODES:
            raise  # ours, raised before or after a statement that left the session clean
        if runner.refused_first_send(exc.__cause__):
            await _shielded(invalidate(runner.conn))
            raise SentNothing("the connection was closed before the statement was sent") from exc
        await _shielded(runner.abandon(discard))
        raise
    except Exception as exc:
        if runner.refused_first_send(exc):
            await _shielded(invalidate(runner.conn))
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


def _runner(conn: AsyncConnection, config: ConnectionConfig, max_rows: int,
            row_format: RowFormat, budget: ResultBudget | None, seconds: float) -> Runner:
    adapter = adapter_for(config.db_type, conn.dialect.driver)  # the engine's driver
    if isinstance(adapter, PgAdapter):
        return PgRunner(conn, config, max_rows, row_format, budget, seconds, adapter=adapter)
    return MySqlRunner(conn, config, max_rows, row_format, budget, seconds, adapter=adapter)
