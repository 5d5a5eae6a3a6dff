"""Running a request's statements on aiomysql or asyncmy (through a ``MySqlAdapter``).

Sessions run in autocommit; an unbuffered (server-side) cursor reads ``max_rows + 1`` rows.
When there is more, the rest is drained first: read and dropped, never encoded, for at
most ``DRAIN_SECONDS`` and about ``DRAIN_BYTES`` of row data. A result that ends within
that bound leaves the connection clean: it goes back to the pool (no ``KILL QUERY``, no
second slot, no reconnect). Past the bound the rest stays unread: ``KILL QUERY`` stops the
server and the connection is discarded (``unread``). Inside ``/transaction`` the work must
be committed, so the rest is always read and dropped. A ``readOnly`` connection runs each
request in ``START TRANSACTION READ ONLY``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import DatabaseError, DbPoolError, ResultTooLarge
from app.pools.budget import ResultBudget
from app.pools.drivers import MySqlAdapter
from app.pools.encoding import RowFormat, encode_rows
from app.pools.lanes import Planned, for_session
from app.pools.runner import IsolationLevel, Runner, Statement, StatementResult
from app.pools.session_reset import mysql_session_statements

__all__ = ["DRAIN_BYTES", "DRAIN_SECONDS", "MySqlRunner"]

_SLICE = 128  # rows read from the wire between two budget checks
# The rest of a truncated result is drained (read, dropped) within these bounds before the
# connection is given up. Giving it up costs a second slot for the killer, a KILL QUERY
# round trip, polls of the session list (20 ms apart at first) and a new connection (TCP,
# login, set-up), all before the answer goes out; with every slot busy (maxConnections 1)
# the pool waits for the statement's own limit. aiomysql decodes about 4 us a small row
# (asyncmy ~0.1 us): a typical overshoot of a few thousand rows drains in 20-40 ms alone,
# and several times that on a shared, busy CPU (measured: 5 000 rows past 100 ms under the
# test suite's load), hence 200 ms of wall time. 4 MiB is what a 1 Gbit/s link carries in
# ~35 ms; it bounds the bandwidth and memory spent on rows nobody reads. Fixed: nothing a
# caller sends scales them (``maxRows`` only decides whether there is a rest).
DRAIN_SECONDS = 0.2
DRAIN_BYTES = 4 * 1024 * 1024


class MySqlRunner(Runner):
    """MySQL/MariaDB statements, transactions and read-only requests."""

    adapter: MySqlAdapter

    def __init__(self, conn: AsyncConnection, config: ConnectionConfig, max_rows: int,
                 row_format: RowFormat, budget: ResultBudget | None, seconds: float, *,
                 adapter: MySqlAdapter) -> None:
        self.adapter = adapter
        super().__init__(conn, config, max_rows, row_format, budget, seconds)

    async def query(self, statement: Statement) -> StatementResult:
        driver = await self.driver()
        planned = await self.plan(statement, driver, None)
        await self._tighten(driver)
        if not self.config.read_only:
            return await self._statement(driver, planned)  # autocommit: commits on its own
        await self._begin(driver)
        try:
            result = await self._statement(driver, planned)
        except DatabaseError:
            await driver.rollback()
            raise
        if not result.unread:  # rows left past the drain bound: the connection is discarded
            await driver.commit()
        return result

    async def transaction(self, statements: Sequence[Statement],
                          isolation: IsolationLevel | None) -> list[StatementResult]:
        driver = await self.driver()
        planned = [await self.plan(s, driver, index) for index, s in enumerate(statements)]
        self.dirty()  # any statement of a transaction: reset on return
        await self._tighten(driver)
        if isolation:  # applies to the next transaction: the one begun below
            self.sending()
            await self.adapter.execute(driver, f"SET TRANSACTION ISOLATION LEVEL {isolation}")
        await self._begin(driver)
        try:
            results = await self.each(planned, lambda s: self._statement(driver, s, True))
        except DbPoolError:
            await driver.rollback()
            raise
        await driver.commit()
        return results

    async def _begin(self, driver: Any) -> None:
        """The session runs in autocommit; a read-only one gets a read-only transaction."""
        self.sending()
        if self.config.read_only:
            await self.adapter.execute(driver, "START TRANSACTION READ ONLY")
        else:
            await driver.begin()

    async def _statement(self, driver: Any, planned: Planned,
                         in_transaction: bool = False) -> StatementResult:
        # A statement before this one may have changed sql_mode (NO_BACKSLASH_ESCAPES).
        escapes = await self.adapter.backslash_escapes(driver)
        planned = self.note(for_session(planned, self.config, escapes))
        self.sending()
        try:
            cursor = await self.adapter.run(driver, planned.sql, planned.args)
        except Exception as exc:
            raise self.translate(exc) from exc
        description = cursor.description
        if description is None:
            count = cursor.rowcount
            await cursor.close()
            return StatementResult(columns=[], rows=[], row_count=max(count, 0), truncated=False)
        columns = [d[0] for d in description]
        result = await self._rows(cursor, columns, self.adapter.json_columns(description))
        if result.truncated and not in_transaction:
            # Drained within a small bound; past it, killed and discarded instead. Inside a
            # transaction the work must be committed, so the rest is read and dropped.
            if not await self._drained(cursor):
                result.unread = self.unread = True
        else:
            await cursor.close()
        return result

    async def _drained(self, cursor: Any) -> bool:
        """The rest of a truncated result read and dropped within the bound. A failure
        while draining (the session's own limit, a lost link) counts as not drained: the
        rows are the caller's already, and the connection is given up."""
        try:
            return await self.adapter.drain(cursor, seconds=DRAIN_SECONDS, max_bytes=DRAIN_BYTES)
        except Exception:
            return False

    async def _rows(self, cursor: Any, columns: list[str],
                    json_columns: frozenset[int]) -> StatementResult:
        """Up to ``max_rows + 1`` rows, read and encoded slice by slice, so that a result
        past the budget stops being read at the first slice beyond it."""
        encoded: list[Any] = []
        while True:
            wanted = min(_SLICE, self.max_rows + 1 - len(encoded))
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

    async def _tighten(self, driver: Any) -> None:
        """A request timeout tighter than the connection's becomes the session's limit for
        this request (the reset on return restores it), so the server stops the statement
        itself and no ``KILL QUERY`` (another connection) is needed."""
        if self.seconds >= self.config.query_timeout:
            return
        mariadb = "mariadb" in str(driver.get_server_info()).lower()
        statements = mysql_session_statements(mariadb=mariadb, query_timeout=self.seconds,
                                              read_only=False)
        self.dirty()  # the reset on return restores the session's own limit
        self.sending()
        await self.adapter.execute(driver, statements[0])
