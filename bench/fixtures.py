"""What the benchmark reads: ``bench_items`` (10,000 rows) in ``dbpool_test`` on PostgreSQL
and MariaDB, created as ``dbpool_test``, and the statements of each case.

The table is a persistent, idempotent fixture: it is rebuilt only when its contents are
not exactly ids 1..N, so concurrent runs can share it.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass

import asyncpg
import pymysql

__all__ = ["MY", "PG", "Case", "DbTarget", "cases_for", "ensure_tables"]

ROWS = 10_000
TABLE = "bench_items"
_PAGE = 100


@dataclass(frozen=True)
class DbTarget:
    """Coordinates of one real database the benchmark reads."""

    engine: str  # "postgresql" | "mariadb"
    host: str
    port: int
    database: str
    user: str
    password: str

    @property
    def placeholder(self) -> str:
        return "$1" if self.engine == "postgresql" else "%s"


PG = DbTarget("postgresql", "127.0.0.1", 5432, "dbpool_test", "dbpool_test", "dbpool-test-pw")
MY = DbTarget("mariadb", "127.0.0.1", 3306, "dbpool_test", "dbpool_test", "dbpool-test-pw")


@dataclass(frozen=True)
class Case:
    """One statement shape and the JSON bodies that exercise it."""

    name: str  # "select1" | "point" | "rows100"
    bodies: tuple[bytes, ...]


def cases_for(names: tuple[str, ...], variants: int = 512) -> list[Case]:
    """Bodies use named ``:id`` parameters (the service's portable style, and what a
    SQLAlchemy ``text()`` takes), the same for every server and both engines; ids are
    random but fixed per run so every target gets the same sequence."""
    rng = random.Random(20250113)
    sql = {
        "select1": "SELECT 1",
        "point": f"SELECT * FROM {TABLE} WHERE id = :id",
        "rows100": f"SELECT * FROM {TABLE} WHERE id >= :id ORDER BY id LIMIT {_PAGE}",
    }
    out = []
    for name in names:
        bodies: tuple[bytes, ...]
        if name == "select1":
            bodies = (json.dumps({"sql": sql[name], "params": {}}).encode(),)
        else:
            top = ROWS if name == "point" else ROWS - _PAGE + 1
            ids = [rng.randint(1, top) for _ in range(variants)]
            bodies = tuple(
                json.dumps({"sql": sql[name], "params": {"id": i}}).encode() for i in ids
            )
        out.append(Case(name, bodies))
    return out


def ensure_tables() -> None:
    """Create and fill ``bench_items`` on both databases unless already right."""
    asyncio.run(_ensure_pg())
    _ensure_my()


_COLUMNS = "id, name, category, price, note"


def _row(i: int) -> tuple[int, str, int, float, str]:
    return (i, f"item-{i:05d}", i % 37, round(i * 0.37, 2), f"note for item {i}")


async def _ensure_pg() -> None:
    conn = await asyncpg.connect(
        host=PG.host, port=PG.port, database=PG.database, user=PG.user, password=PG.password
    )
    try:
        async with conn.transaction():
            # One run at a time rebuilds; others wait here and then find it right.
            await conn.execute("SELECT pg_advisory_xact_lock(7310001)")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (id integer PRIMARY KEY,"
                " name text NOT NULL, category integer NOT NULL,"
                " price double precision NOT NULL, note text NOT NULL)"
            )
            count, top = await conn.fetchrow(f"SELECT count(*), coalesce(max(id), 0) FROM {TABLE}")
            if (count, top) != (ROWS, ROWS):
                await conn.execute(f"TRUNCATE {TABLE}")
                await conn.copy_records_to_table(
                    TABLE, records=[_row(i) for i in range(1, ROWS + 1)]
                )
        await conn.execute(f"ANALYZE {TABLE}")
    finally:
        await conn.close()


def _ensure_my() -> None:
    conn = pymysql.connect(
        host=MY.host,
        port=MY.port,
        database=MY.database,
        user=MY.user,
        password=MY.password,
        autocommit=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT GET_LOCK('bench_items_fixture', 60)")
            try:
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (id INT PRIMARY KEY,"
                    " name VARCHAR(64) NOT NULL, category INT NOT NULL,"
                    " price DOUBLE NOT NULL, note VARCHAR(128) NOT NULL) ENGINE=InnoDB"
                )
                cur.execute(f"SELECT count(*), coalesce(max(id), 0) FROM {TABLE}")
                if tuple(cur.fetchone() or ()) != (ROWS, ROWS):
                    cur.execute(f"DELETE FROM {TABLE}")
                    rows = [_row(i) for i in range(1, ROWS + 1)]
                    cur.executemany(
                        f"INSERT INTO {TABLE} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s)", rows
                    )
            finally:
                cur.execute("SELECT RELEASE_LOCK('bench_items_fixture')")
    finally:
        conn.close()
