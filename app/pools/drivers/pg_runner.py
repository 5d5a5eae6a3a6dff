"""Running a request's statements on asyncpg (through ``PgAdapter``).

Outside a transaction a statement commits on its own and uses asyncpg's statement cache.
Inside ``/transaction`` statements are prepared fresh (never a stale cached plan). On a
``readOnly`` connection the request runs inside ``BEGIN READ ONLY`` plus a ``SELECT 1`` in
the same round trip, so the snapshot exists before the caller's first statement (after
it, ``SET TRANSACTION READ WRITE`` fails).

asyncpg's statement cache: a cached statement the server no longer knows (SQLSTATE 26000,
after a caller's ``DEALLOCATE``) or whose plan went stale is dropped with the rest of the
connection's cache and prepared again, once: the server refused it before running it. A
statement that wipes every prepared statement (``DEALLOCATE ALL``, ``DISCARD ALL/PLANS``)
is never cached, and clears the driver's caches right after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig
from app.errors import DatabaseError
from app.pools.budget import ResultBudget
from app.pools.drivers import PgAdapter
from app.pools.drivers.pg import STALE
from app.pools.encoding import RowFormat
from app.pools.lanes import Planned, for_session
from app.pools.runner import IsolationLevel, Runner, Statement, StatementResult

__all__ = ["PgRunner"]

# The SELECT takes the snapshot: from then on the transaction cannot be made writable.
_READ_ONLY = " READ ONLY; SELECT 1"


class PgRunner(Runner):
    """PostgreSQL statements, transactions and read-only requests."""

    adapter: PgAdapter

    def __init__(self, conn: AsyncConnection, config: ConnectionConfig, max_rows: int,
                 row_format: RowFormat, budget: ResultBudget | None, seconds: float, *,
                 adapter: PgAdapter) -> None:
        self.adapter = adapter
        super().__init__(conn, config, max_rows, row_format, budget, seconds)

    async def query(self, statement: Statement) -> StatementResult:
        pg = await self.driver()
        planned = await self.plan(statement, pg, None)
        if not self.config.read_only:
            return await self._statement(pg, planned, in_transaction=False)
        return await self._read_only(pg, planned)

    async def transaction(self, statements: Sequence[Statement],
                          isolation: IsolationLevel | None) -> list[StatementResult]:
        pg = await self.driver()
        planned = [await self.plan(s, pg, index) for index, s in enumerate(statements)]
        self.dirty()  # any statement of a transaction: reset on return
        self.sending()
        await pg.execute(self._begin(isolation))
        try:
            results = await self.each(planned, lambda s: self._statement(pg, s, True))
        except DatabaseError:
            await _rollback(pg)
            raise
        self.sending()
        await pg.execute("COMMIT")
        return results

    def _begin(self, isolation: IsolationLevel | None) -> str:
        sql = f"BEGIN ISOLATION LEVEL {isolation}" if isolation else "BEGIN"
        return sql + _READ_ONLY if self.config.read_only else sql

    async def _read_only(self, pg: Any, planned: Planned) -> StatementResult:
        """One statement in a read-only transaction; a stale cached statement aborts it,
        so the whole transaction is tried once more (the statement never ran)."""
        for attempt in (1, 2):
            self.sending()
            await pg.execute(self._begin(None))
            try:
                result = await self._statement(pg, planned, True, cache=True)
            except STALE:
                await _rollback(pg)
                if attempt == 2:
                    raise
                continue
            except Exception:
                await _rollback(pg)
                raise
            self.sending()
            await pg.execute("COMMIT")
            return result
        raise AssertionError("unreachable")

    async def _statement(self, pg: Any, planned: Planned, in_transaction: bool,
                         cache: bool | None = None) -> StatementResult:
        # A statement before this one may have turned standard_conforming_strings off.
        planned = self.note(
            for_session(planned, self.config, await self.adapter.backslash_escapes(pg)))
        wipes = planned.analysis.wipes_prepared
        # In a transaction a stale cached plan would abort the whole transaction: prepare
        # afresh (unnamed). Alone, asyncpg's cache is safe: a stale plan is re-prepared.
        use_cache = (not in_transaction if cache is None else cache) and not wipes
        try:
            fetched = await self.adapter.fetch_limited(
                pg, self.adapted(), planned.sql, planned.args, limit=self.max_rows + 1,
                cache=use_cache, retry=use_cache and not in_transaction, on_send=self.sending)
        finally:
            if wipes:
                await self.adapter.forget_prepared(pg, self.adapted())
        return self.result(fetched)


async def _rollback(pg: Any) -> None:
    """End a failed transaction; should that fail too, the reset on return finds the
    transaction still open and tries again (or the connection is discarded)."""
    with suppress(Exception):
        await pg.execute("ROLLBACK")
