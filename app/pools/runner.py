"""One request's statements on one pooled connection, the part every driver shares.

A dialect's runner (``app.pools.drivers.pg_runner`` / ``mysql_runner``) adds how a
statement, a transaction and a read-only request run on its driver; the driver's own
calls go through its adapter (``app.pools.drivers``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import DatabaseError, DbPoolError, ResultTooLarge
from app.pools.budget import ResultBudget
from app.pools.drivers import DriverAdapter, Fetched
from app.pools.encoding import RowFormat, encode_rows
from app.pools.lanes import Planned, plan
from app.pools.session_state import leaves_clean, mark_dirty
from app.pools.stale import SentNothing
from app.pools.translate import translate_error

__all__ = [
    "Discard",
    "IsolationLevel",
    "Params",
    "Runner",
    "Statement",
    "StatementResult",
    "invalidate",
]

Params = Mapping[str, Any] | Sequence[Any] | None
IsolationLevel = Literal["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE", "READ UNCOMMITTED"]
Discard = Callable[[AsyncConnection], Awaitable[None]]


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


class Runner:
    """One request's statements on one connection; a dialect's subclass runs them."""

    adapter: DriverAdapter

    def __init__(self, conn: AsyncConnection, config: ConnectionConfig,
                 max_rows: int, row_format: RowFormat, budget: ResultBudget | None,
                 seconds: float) -> None:
        """A subclass sets ``adapter`` (its driver's) before calling this."""
        self.conn, self.config = conn, config
        self.max_rows, self.row_format = max_rows, row_format
        self.budget, self.seconds = budget, seconds
        self.unread = False
        self.sends = 0  # statements handed to the driver so far (each may reach the server)

    async def query(self, statement: Statement) -> StatementResult:
        raise NotImplementedError

    async def transaction(self, statements: Sequence[Statement],
                          isolation: IsolationLevel | None) -> list[StatementResult]:
        raise NotImplementedError

    def translate(self, exc: BaseException) -> DatabaseError:
        return translate_error(exc, self.config.db_type)  # the caller's own SQL: no scrub

    def refused_first_send(self, exc: BaseException | None) -> bool:
        """The driver refused the very first statement before writing it: nothing was sent."""
        return exc is not None and self.sends <= 1 and self.adapter.refused_before_send(exc)

    def sending(self) -> None:
        self.sends += 1

    async def driver(self) -> Any:
        """The driver connection, refused (``SentNothing``) when known dead."""
        sync = self.conn.sync_connection
        if sync is not None and not sync.invalidated and not sync.closed:
            raw = sync.connection  # already checked out: no I/O, no greenlet hop
        else:
            raw = await self.conn.get_raw_connection()
        driver = raw.driver_connection
        if self.adapter.is_closed(driver):
            raise SentNothing("the server closed the connection before the statement was sent")
        return driver

    def adapted(self) -> Any:
        """SQLAlchemy's adapter around the driver connection, while it is valid."""
        sync = self.conn.sync_connection
        if sync is None or sync.invalidated or sync.closed:
            return None
        return sync.connection.dbapi_connection

    async def abandon(self, discard: Discard | None) -> None:
        """Stop the statement on the server, then make sure the connection is never reused."""
        await (discard or invalidate)(self.conn)

    async def stop(self, discard: Discard | None) -> None:
        """The statement's read was cancelled (client timer, client gone). PostgreSQL: asyncpg
        sent the CancelRequest, and the reset on return waits for it: nothing to do here."""
        if self.config.db_type.is_mysql_family:
            await self.abandon(discard)

    async def plan(self, statement: Statement, driver: Any, index: int | None) -> Planned:
        """Checked and bound before anything is sent, for the session's current mode."""
        return self.note(plan(statement.sql, statement.params, self.config, index=index,
                              backslash_escapes=await self.adapter.backslash_escapes(driver)))

    def note(self, planned: Planned) -> Planned:
        """Before ``planned`` is sent: mark the connection dirty unless the statement
        cannot leave state in the session (``session_state``)."""
        if not leaves_clean(planned.analysis):
            mark_dirty(self.conn)
        return planned

    def dirty(self) -> None:
        """What comes next may leave state in the session (a transaction, a SET of ours)."""
        mark_dirty(self.conn)

    async def each(self, statements: Sequence[Planned],
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

    def result(self, fetched: Fetched) -> StatementResult:
        if fetched.columns is None:
            return StatementResult(columns=[], rows=[], row_count=fetched.affected,
                                   truncated=False)
        rows = fetched.rows
        truncated = len(rows) > self.max_rows
        kept = rows[: self.max_rows] if truncated else rows
        encoded = encode_rows(fetched.columns, kept, json_columns=fetched.json_columns,
                              row_format=self.row_format, budget=self.budget)
        if fetched.unread:
            self.unread = True
        return StatementResult(columns=fetched.columns, rows=encoded, row_count=len(encoded),
                               truncated=truncated, unread=fetched.unread)


async def invalidate(conn: AsyncConnection) -> None:
    """The default discard: the connection is closed, never reused."""
    with suppress(Exception):
        async with asyncio.timeout(5.0):
            await conn.invalidate()
