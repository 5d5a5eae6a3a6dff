"""asyncpg: the one module that touches asyncpg's (and SQLAlchemy's asyncpg adapter's)
private API.

Fast path: the statement comes from asyncpg's per-connection statement cache (a Parse
round trip only the first time on a connection), then one Bind/Execute with a row limit
on the unnamed portal, so the server stops producing rows: one round trip.

Public path: ``Connection.prepare`` of an unnamed statement (a Parse each time), then for
a statement without a result ``PreparedStatement.fetch`` and its status message, and for
one with a result a cursor's ``fetch(limit)`` (inside a transaction; alone, in a
transaction of its own, which commits like the autocommit it replaces). Caches are
forgotten with ``reload_schema_state``.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from typing import Any

import asyncpg

from app.pools.drivers.base import Fetched, Surface, surface_present
from app.pools.encoding import coerce_pg_params

__all__ = ["STALE", "PgAdapter"]

_JSON = frozenset({"json", "jsonb"})
_COUNT = re.compile(r"(\d+)$")
# A cached statement the server no longer knows (26000) or whose plan went stale.
STALE = (asyncpg.exceptions.InvalidCachedStatementError,
         asyncpg.exceptions.InvalidSQLStatementNameError)


def _surface() -> Surface:
    """The private names the fast path uses (a moved module counts as missing)."""
    try:
        from asyncpg.protocol import protocol
        from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection
    except ImportError:
        return ((asyncpg, ("protocol.protocol", "AsyncAdapt_asyncpg_connection")),)
    return (
        (asyncpg.Connection, ("_protocol", "_get_statement", "_drop_local_statement_cache")),
        (protocol.PreparedStatementState, ("_get_parameters", "_get_attributes")),
        (protocol.BaseProtocol, ("bind_execute",)),
        (AsyncAdapt_asyncpg_connection, ("_prepared_statement_cache",)),
    )


class PgAdapter:
    """asyncpg behind the ``DriverAdapter`` seam."""

    name = "asyncpg"

    @property
    def fast(self) -> bool:
        return surface_present(self.name, _surface)

    def confirm(self, driver: Any) -> None:
        pass  # asyncpg's surface is all on its classes: checked by ``fast``

    def is_closed(self, driver: Any) -> bool:
        return driver is None or bool(driver.is_closed())

    def server_id(self, driver: Any) -> int:
        return int(driver.get_server_pid())

    async def backslash_escapes(self, driver: Any) -> bool:
        return bool(driver.get_settings().standard_conforming_strings == "off")

    async def fetch(self, driver: Any, sql: str, args: Any, *, limit: int) -> Fetched:
        return await self.fetch_limited(driver, None, sql, args, limit=limit, cache=True,
                                        retry=True, on_send=lambda: None)

    async def execute(self, driver: Any, sql: str) -> None:
        await driver.execute(sql)

    async def ping(self, driver: Any) -> None:
        await driver.execute("SELECT 1")

    def session_marker(self, driver: Any) -> Any:
        """The settings the server reported (ParameterStatus), as of now. Fast path: the
        live dict asyncpg updates on each ParameterStatus, with a copy to compare against;
        public path: the settings' ``repr`` (slower)."""
        settings = driver.get_settings()
        if self.fast:
            live = _reported(settings)
            if live is not None:
                return live, dict(live)
        return repr(settings)

    def session_changed(self, driver: Any, marker: Any) -> bool:
        """A transaction is open, or the server reported a setting change since ``marker``."""
        if driver.is_in_transaction():
            return True
        if isinstance(marker, tuple):
            live, then = marker
            return bool(live != then)
        return bool(marker != repr(driver.get_settings()))

    async def reset(self, driver: Any, plan: tuple[str, str]) -> bool:
        """Roll back, run the session reset (one round trip, public API); when its last
        tag says SQL-level prepared statements exist, deallocate each (the second query
        of ``plan`` finds them)."""
        sql, prepared_sql = plan
        if driver.is_in_transaction():  # a BEGIN sent as plain SQL, or a failed transaction
            await driver.execute("ROLLBACK")
        if await driver.execute(sql) == "SELECT 1":
            for record in await driver.fetch(prepared_sql):
                name = str(record[0]).replace('"', '""')
                await driver.execute(f'DEALLOCATE "{name}"')
        return True

    def refused_before_send(self, exc: BaseException) -> bool:
        # asyncpg checks is_closed() (and its protocol state) before sending.
        return isinstance(exc, asyncpg.InterfaceError) and str(exc).endswith(
            "connection is closed")

    async def cancel(self, via: Any, server_id: int) -> bool:
        return bool(await via.fetchval("SELECT pg_cancel_backend($1)", server_id))

    async def fetch_limited(self, driver: Any, adapted: Any, sql: str, args: Any, *,
                            limit: int, cache: bool, retry: bool,
                            on_send: Callable[[], None]) -> Fetched:
        """One statement, at most ``limit`` rows, on ``driver`` (``adapted``: SQLAlchemy's
        adapter around it, or None). ``cache``: use the statement cache; ``retry``: a stale
        cached statement is dropped with the caches and prepared again once, outside a
        transaction (the server refused it before running it). ``on_send`` is called just
        before the statement is handed to the driver to execute."""
        if not self.fast:
            return await _public_fetch(driver, sql, args, limit, on_send)
        if driver.is_closed():  # what asyncpg's public calls check first; the private don't
            raise asyncpg.InterfaceError("connection is closed")
        state = await driver._get_statement(sql, None, use_cache=cache)
        values = coerce_pg_params(args or [], [p.name for p in state._get_parameters()])
        attributes = state._get_attributes()
        on_send()
        row_limit = limit if attributes else 0
        try:
            rows, status = await _bind_execute(driver, state, values, row_limit)
        except STALE:
            await self.forget_prepared(driver, adapted)
            if not retry or driver.is_in_transaction():
                raise
            state = await driver._get_statement(sql, None)
            rows, status = await _bind_execute(driver, state, values, row_limit)
        if rows and len(rows[0]) != len(attributes):  # re-prepared after a schema change
            attributes = (await driver._get_statement(sql, None))._get_attributes()
        return _fetched(attributes, rows, status)

    async def forget_prepared(self, driver: Any, adapted: Any) -> None:
        """The server's prepared statements are gone: forget asyncpg's and SQLAlchemy's."""
        if not self.fast:
            # SQLAlchemy's own cache is off on this path (engine_factory).
            await driver.reload_schema_state()
            return
        driver._drop_local_statement_cache()
        cache = getattr(adapted, "_prepared_statement_cache", None)
        if cache is not None:
            cache.clear()


def _reported(settings: Any) -> dict[str, str] | None:
    """asyncpg's dict of server-reported settings, held by its ``ConnectionSettings`` (a C
    attribute Python cannot name: found among the object's references)."""
    for referent in gc.get_referents(settings):
        if isinstance(referent, dict) and "server_version" in referent:
            return referent
    return None


def _fetched(attributes: Any, rows: list[Any], status: str) -> Fetched:
    if not attributes:
        match = _COUNT.search(status)
        return Fetched(columns=None, rows=[], json_columns=frozenset(),
                       affected=int(match.group(1)) if match else 0)
    return Fetched(columns=[a.name for a in attributes], rows=rows,
                   json_columns=frozenset(i for i, a in enumerate(attributes)
                                          if a.type.name in _JSON))


async def _bind_execute(pg: Any, state: Any, values: list[Any], limit: int
                        ) -> tuple[list[Any], str]:
    """One Bind/Execute(limit)/Sync round trip on the unnamed portal (what asyncpg's own
    ``fetch`` does, plus the row limit); no tag when the limit suspended the portal."""
    rows, status, _ = await pg._protocol.bind_execute(state, values, "", limit, True, None)
    if isinstance(status, bytes):
        status = status.decode()
    return rows, status or ""


async def _public_fetch(pg: asyncpg.Connection, sql: str, args: Any, limit: int,
                        on_send: Callable[[], None]) -> Fetched:
    # Unnamed statements (name=""): nothing of ours lingers in pg_prepared_statements for a
    # caller's DEALLOCATE to meet. A simple-protocol query (the BEGIN below) drops the
    # unnamed statement, so inside a transaction of our own it is prepared again.
    statement = await pg.prepare(sql, name="")
    values = coerce_pg_params(args or [], [p.name for p in statement.get_parameters()])
    attributes = statement.get_attributes()
    if not attributes:
        on_send()
        await statement.fetch(*values)
        return _fetched(attributes, [], statement.get_statusmsg() or "")
    if pg.is_in_transaction():
        on_send()
        return _fetched(attributes, await _cursor_rows(statement, values, limit), "")
    async with pg.transaction():  # a cursor lives in a transaction
        statement = await pg.prepare(sql, name="")
        on_send()
        rows = await _cursor_rows(statement, values, limit)
    return _fetched(attributes, rows, "")


async def _cursor_rows(statement: Any, values: list[Any], limit: int) -> list[Any]:
    cursor = await statement.cursor(*values)
    return list(await cursor.fetch(limit))
