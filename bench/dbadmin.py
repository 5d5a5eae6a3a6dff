"""What the databases themselves say, and the few admin steps the extras need.

Counts come from ``pg_stat_activity`` (``application_name = dbpool:<id>``) and
``information_schema.PROCESSLIST``. MariaDB's ``max_connections`` is raised only when the
live-pool measurement needs it and restored afterwards (a context manager).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterable, Iterator

import asyncpg
import pymysql

from bench.fixtures import MY, PG, DbTarget

__all__ = ["mariadb_capacity", "my_count", "pg_count", "throwaway_mariadb_user"]


def _my_root() -> pymysql.connections.Connection:
    return pymysql.connect(host=MY.host, port=MY.port, user="root", password="", autocommit=True)


async def pg_count(connection_ids: Iterable[int]) -> int:
    """PostgreSQL backends whose ``application_name`` is ``dbpool:<id>`` for these ids."""
    names = [f"dbpool:{i}" for i in connection_ids]
    conn = await asyncpg.connect(host=PG.host, port=PG.port, user="postgres", database="postgres")
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = ANY($1::text[])", names
        )
        return int(value)
    finally:
        await conn.close()


def my_count(user: str) -> int:
    """Connections MariaDB counts for ``user``."""
    conn = _my_root()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM information_schema.PROCESSLIST WHERE USER = %s", user)
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


@contextlib.contextmanager
def throwaway_mariadb_user() -> Iterator[DbTarget]:
    """A fresh MariaDB account on ``dbpool_test`` (so its connections can be counted alone),
    dropped on exit."""
    name = f"bench_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(16)
    conn = _my_root()
    try:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                # pymysql formats with %: the '%' host must be doubled in a parametrised query.
                pattern = host.replace("%", "%%")
                cur.execute(f"CREATE USER '{name}'@'{pattern}' IDENTIFIED BY %s", password)
                cur.execute(f"GRANT SELECT ON {MY.database}.* TO '{name}'@'{host}'")
        yield DbTarget("mariadb", MY.host, MY.port, MY.database, name, password)
    finally:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
        conn.close()


@contextlib.contextmanager
def mariadb_capacity(extra: int) -> Iterator[dict[str, int]]:
    """Make room for ``extra`` more connections, raising ``max_connections`` only when
    needed, and put the old value back on exit. Yields what it did."""
    conn = _my_root()
    raised, before = False, 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@GLOBAL.max_connections")
            before = int(cur.fetchone()[0])
            cur.execute("SHOW GLOBAL STATUS LIKE 'Threads_connected'")
            in_use = int(cur.fetchone()[1])
            needed = in_use + extra + 100  # headroom for everyone else's tests
            raised = needed > before
            if raised:
                cur.execute(f"SET GLOBAL max_connections = {int(needed)}")
        yield {"max_connections_before": before, "max_connections_during": max(before, needed)}
    finally:
        if raised:
            with conn.cursor() as cur:
                cur.execute(f"SET GLOBAL max_connections = {int(before)}")
        conn.close()
