"""The soak's own database objects, so nothing else on the machine disturbs its counts.

One run owns: a PostgreSQL login role and, optionally, a registry database owned by it; two
MariaDB accounts (one per MariaDB pool: PROCESSLIST counts by user); and, on both servers,
``soak_<tag>_items`` (rows the readers read) and ``soak_<tag>_writes`` (what the writers
insert, checked afterwards). ``SoakDbs.drop()`` removes every one of them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

import asyncpg
import pymysql

from tests.support import dbs

__all__ = ["ITEMS", "SoakDbs"]

ITEMS = 1000  # rows in the items table: ids 1..ITEMS

_WRITES_PG = "(k varchar(64) PRIMARY KEY, grp varchar(64) NOT NULL, part integer NOT NULL)"
_WRITES_MY = _WRITES_PG + " ENGINE=InnoDB"
_ITEMS_COLUMNS = "(id integer PRIMARY KEY, name varchar(32) NOT NULL, price double precision)"


@dataclass
class SoakDbs:
    """Names and passwords of one run's database objects."""

    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    pg_registry: bool = True

    @property
    def pg_role(self) -> str:
        return f"soak_{self.tag}"

    @property
    def registry_database(self) -> str:
        return f"dbpool_soak_{self.tag}"

    def my_user(self, suffix: str) -> str:
        return f"soak_{self.tag}_{suffix}"

    @property
    def items(self) -> str:
        return f"soak_{self.tag}_items"

    @property
    def writes(self) -> str:
        return f"soak_{self.tag}_writes"

    async def create(self, my_suffixes: tuple[str, ...]) -> None:
        await self._create_pg()
        self._create_my(my_suffixes)

    async def drop(self, my_suffixes: tuple[str, ...]) -> None:
        """Remove everything ``create`` made (idempotent, tolerant of half-made state)."""
        await self._drop_pg()
        self._drop_my(my_suffixes)

    async def _create_pg(self) -> None:
        admin = await dbs.pg_admin()
        try:
            await admin.execute(f"CREATE ROLE {self.pg_role} LOGIN PASSWORD '{self.password}'")
            if self.pg_registry:
                await admin.execute(
                    f"CREATE DATABASE {self.registry_database} OWNER {self.pg_role}"
                )
        finally:
            await admin.close()
        conn = await _pg_test_db_as_superuser()
        try:
            await conn.execute(f"CREATE TABLE {self.items} {_ITEMS_COLUMNS}")
            await conn.execute(f"CREATE TABLE {self.writes} {_WRITES_PG}")
            await conn.copy_records_to_table(self.items, records=_item_rows())
            await conn.execute(f"GRANT SELECT ON {self.items} TO {self.pg_role}")
            await conn.execute(f"GRANT SELECT, INSERT ON {self.writes} TO {self.pg_role}")
        finally:
            await conn.close()

    async def _drop_pg(self) -> None:
        conn = await _pg_test_db_as_superuser()
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {self.items}, {self.writes}")
            exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", self.pg_role)
            if exists:
                await conn.execute(f"DROP OWNED BY {self.pg_role}")
        finally:
            await conn.close()
        admin = await dbs.pg_admin()
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {self.registry_database} WITH (FORCE)")
            await admin.execute(f"DROP ROLE IF EXISTS {self.pg_role}")
        finally:
            await admin.close()

    def _create_my(self, suffixes: tuple[str, ...]) -> None:
        for suffix in suffixes:
            dbs.create_mysql_user(self.my_user(suffix), self.password)
        conn = _my_test_db()
        try:
            with conn.cursor() as cur:
                cur.execute(f"CREATE TABLE {self.items} {_ITEMS_COLUMNS} ENGINE=InnoDB")
                cur.execute(f"CREATE TABLE {self.writes} {_WRITES_MY}")
                cur.executemany(f"INSERT INTO {self.items} VALUES (%s, %s, %s)", list(_item_rows()))
        finally:
            conn.close()

    def _drop_my(self, suffixes: tuple[str, ...]) -> None:
        conn = _my_test_db()
        try:
            with conn.cursor() as cur:
                cur.execute(f"DROP TABLE IF EXISTS {self.items}, {self.writes}")
        finally:
            conn.close()
        for suffix in suffixes:
            dbs.drop_mysql_user(self.my_user(suffix))

    async def written_pg(self) -> list[tuple[str, str, int]]:
        conn = await _pg_test_db_as_superuser()
        try:
            rows = await conn.fetch(f"SELECT k, grp, part FROM {self.writes}")
        finally:
            await conn.close()
        return [(r["k"], r["grp"], r["part"]) for r in rows]

    def written_my(self) -> list[tuple[str, str, int]]:
        conn = _my_test_db()
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT k, grp, part FROM {self.writes}")
                return [(str(k), str(g), int(p)) for k, g, p in cur.fetchall()]
        finally:
            conn.close()


def _item_rows() -> list[tuple[int, str, float]]:
    return [(i, f"item-{i:04d}", round(i * 0.37, 2)) for i in range(1, ITEMS + 1)]


async def _pg_test_db_as_superuser() -> asyncpg.Connection:
    return await asyncpg.connect(
        host=dbs.PG_HOST, port=dbs.PG_PORT, user="postgres", database=dbs.PG_DATABASE
    )


def _my_test_db() -> pymysql.connections.Connection:
    return pymysql.connect(
        host=dbs.MY_HOST,
        port=dbs.MY_PORT,
        user="root",
        password="",
        database=dbs.MY_DATABASE,
        autocommit=True,
    )
