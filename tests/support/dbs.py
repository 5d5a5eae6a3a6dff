"""Coordinates of the real test databases (created by scripts/test_databases.sh) and
helpers that ask the databases themselves how many connections they see."""

from __future__ import annotations

import asyncpg
import pymysql

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DATABASE = "dbpool_test"
PG_USER = "dbpool_test"
PG_PASSWORD = "dbpool-test-pw"
PG_REGISTRY_URL = "postgresql+asyncpg://dbpool_test@127.0.0.1:5432/dbpool_registry"

MY_HOST = "127.0.0.1"
MY_PORT = 3306
MY_DATABASE = "dbpool_test"
MY_USER = "dbpool_test"
MY_PASSWORD = "dbpool-test-pw"


async def pg_admin() -> asyncpg.Connection:
    """A superuser connection that is not part of any dbpool pool."""
    return await asyncpg.connect(host=PG_HOST, port=PG_PORT, user="postgres", database="postgres")


async def pg_count(application_name: str) -> int:
    """Backends PostgreSQL itself counts for one pool (``application_name = dbpool:<id>``)."""
    conn = await pg_admin()
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", application_name
        )
        return int(value)
    finally:
        await conn.close()


def my_admin() -> pymysql.connections.Connection:
    """A root connection to MariaDB that is not part of any dbpool pool."""
    return pymysql.connect(host=MY_HOST, port=MY_PORT, user="root", password="", autocommit=True)


def my_count(user: str = MY_USER) -> int:
    """Connections MariaDB itself counts for ``user`` (information_schema.PROCESSLIST)."""
    conn = my_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,)
            )
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()


def create_mysql_user(name: str, password: str, *, max_user_connections: int = 0) -> None:
    """A throwaway MariaDB account on ``dbpool_test``, so a test can count its own connections
    (and, with ``max_user_connections``, have the server refuse any excess loudly)."""
    conn = my_admin()
    try:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
                cur.execute(
                    f"CREATE USER '{name}'@'{host.replace('%', '%%')}' IDENTIFIED BY %s"
                    f" WITH MAX_USER_CONNECTIONS {int(max_user_connections)}",
                    (password,),
                )
                cur.execute(f"GRANT ALL ON {MY_DATABASE}.* TO '{name}'@'{host}'")
    finally:
        conn.close()


def drop_mysql_user(name: str) -> None:
    conn = my_admin()
    try:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"DROP USER IF EXISTS '{name}'@'{host}'")
    finally:
        conn.close()
