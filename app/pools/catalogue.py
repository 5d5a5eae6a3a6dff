"""The tables a source node can read, and reading one of them safely.

A table name from a URL never reaches SQL as text: it must first be found in the
catalogue (``information_schema``, by a bound-parameter query), then it is quoted by the
dialect's identifier preparer. Anything not found is ``TableNotFound``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from app.domain import ConnectionConfig, DbType
from app.errors import QueryError, TableNotFound
from app.pools.budget import ResultBudget
from app.pools.encoding import RowFormat
from app.pools.query import Discard, QueryResult, run_query

__all__ = ["TableInfo", "can_write", "list_tables", "read_rows"]

_MAX_NAME = 256  # longer than any engine allows (63 / 64 chars): cannot exist

_PG_TABLES = """
SELECT table_schema, table_name, table_type FROM information_schema.tables
WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
  AND table_schema NOT LIKE 'pg\\_toast%' AND table_schema NOT LIKE 'pg\\_temp\\_%'
ORDER BY table_schema, table_name
"""
_MY_TABLES = """
SELECT table_schema, table_name, table_type FROM information_schema.tables
WHERE table_schema = DATABASE() ORDER BY table_name
"""
_PG_FIND = """
SELECT table_schema FROM information_schema.tables
WHERE table_name = :name AND table_schema = COALESCE(:schema, current_schema())
"""
_MY_FIND = """
SELECT table_schema FROM information_schema.tables
WHERE table_name = :name AND table_schema = COALESCE(:schema, DATABASE())
"""

# Could the login write? Superuser, CREATE on the database or a non-system schema, or a
# writing privilege on any table of this database.
_PG_CAN_WRITE = """
SELECT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)
    OR has_database_privilege(current_database(), 'CREATE')
    OR EXISTS (SELECT 1 FROM pg_namespace n WHERE has_schema_privilege(n.oid, 'CREATE')
               AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema')
    OR EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p', 'v', 'f')
                 AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'))
"""
# Direct grants to the login itself (roles are not followed), at any level. GRANTEE reads
# 'user'@'host'; CURRENT_USER() user@host.
_MY_ME = (
    "CONCAT(QUOTE(SUBSTRING_INDEX(CURRENT_USER(), '@', 1)), '@',"
    " QUOTE(SUBSTRING_INDEX(CURRENT_USER(), '@', -1)))"
)
_MY_CAN_WRITE = f"""
SELECT EXISTS (
  SELECT 1 FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = {_MY_ME}
    AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'ALTER', 'SUPER')
  UNION ALL
  SELECT 1 FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {_MY_ME}
    AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'CREATE', 'DROP', 'ALTER')
  UNION ALL
  SELECT 1 FROM information_schema.TABLE_PRIVILEGES WHERE GRANTEE = {_MY_ME}
    AND PRIVILEGE_TYPE IN ('INSERT', 'UPDATE', 'DELETE', 'DROP', 'ALTER'))
"""


@dataclass(frozen=True, slots=True)
class TableInfo:
    schema: str
    name: str
    type: Literal["table", "view"]


async def list_tables(
    conn: AsyncConnection, config: ConnectionConfig, *, max_rows: int,
    discard: Discard | None = None,
) -> list[TableInfo]:
    """PostgreSQL: tables and views of every non-system schema; MySQL: the current database."""
    sql = _PG_TABLES if config.db_type is DbType.POSTGRESQL else _MY_TABLES
    result = await run_query(conn, config, sql, max_rows=max_rows, row_format="array",
                             discard=discard)
    return [
        TableInfo(schema=str(schema), name=str(name), type="view" if "VIEW" in kind else "table")
        for schema, name, kind in result.rows
    ]


async def read_rows(
    conn: AsyncConnection,
    config: ConnectionConfig,
    table: str,
    *,
    schema: str | None = None,
    limit: int,
    offset: int = 0,
    row_format: RowFormat = "object",
    discard: Discard | None = None,
    budget: ResultBudget | None = None,
) -> QueryResult:
    """``SELECT *`` of one catalogued table, ``limit`` rows from ``offset``, within ``budget``."""
    found_schema = await _find(conn, config, table, schema, discard)
    quoted = conn.dialect.identifier_preparer.format_table(sa.table(table, schema=found_schema))
    if config.db_type is DbType.POSTGRESQL:
        sql = f"SELECT * FROM {quoted} LIMIT $1 OFFSET $2"
    else:
        sql = f"SELECT * FROM {quoted} LIMIT %s OFFSET %s"
    return await run_query(conn, config, sql, [limit, offset], max_rows=limit,
                           row_format=row_format, discard=discard, budget=budget)


async def _find(conn: AsyncConnection, config: ConnectionConfig, table: str,
                schema: str | None, discard: Discard | None) -> str:
    if not _plausible(table) or (schema is not None and not _plausible(schema)):
        raise _not_found(table)
    sql = _PG_FIND if config.db_type is DbType.POSTGRESQL else _MY_FIND
    result = await run_query(conn, config, sql, {"name": table, "schema": schema},
                             max_rows=1, row_format="array", discard=discard)
    if not result.rows:
        raise _not_found(table)
    return str(result.rows[0][0])


async def can_write(conn: AsyncConnection, config: ConnectionConfig, *,
                    discard: Discard | None = None) -> bool | None:
    """Whether the stored login could write (None when the server will not say)."""
    sql = _PG_CAN_WRITE if config.db_type is DbType.POSTGRESQL else _MY_CAN_WRITE
    try:
        result = await run_query(conn, config, sql, max_rows=1, row_format="array",
                                 discard=discard)
    except QueryError:
        return None
    return bool(result.rows[0][0])


def _plausible(name: str) -> bool:
    # Not worth a round trip (and a NUL would make the driver, not the catalogue, refuse).
    return 0 < len(name) <= _MAX_NAME and "\x00" not in name


def _not_found(table: str) -> TableNotFound:
    shown = table if len(table) <= 100 else table[:100] + "..."
    return TableNotFound(f"No table {shown!r} in this database", details={"table": shown})
