"""The replica pairs of the tests (``scripts/replicas.sh``): a PostgreSQL primary with a streaming
standby and a MariaDB primary with a GTID replica, each on its own ports and data directory.

``replica_pairs`` (session scope) starts them and stops them after the run; tests stop, start
and promote single nodes through :func:`node` and :func:`promote`, and put a pair back with
:func:`rebuild` (a promoted standby cannot rejoin as it was).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pymysql
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "replicas.sh"
HOST = "127.0.0.1"
PG_PRIMARY = 15432
PG_STANDBY = 15433
MY_PRIMARY = 13306
MY_REPLICA = 13307
DATABASE = "dbpool_test"
USER = "dbpool_test"
PASSWORD = "dbpool-test-pw"


def _script(*args: str) -> None:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"replicas.sh {' '.join(args)} failed:\n{done.stderr}")


@pytest.fixture(scope="session")
def replica_pairs() -> Iterator[None]:
    """Both pairs up for the session; stopped (data kept, so the next run starts fast) after."""
    _script("start")
    yield
    _script("stop")


async def node(action: str, name: str) -> None:
    """``action`` (start | stop) one node: pg-primary, pg-standby, my-primary, my-replica."""
    await asyncio.to_thread(_script, "node", action, name)


async def promote() -> None:
    """``pg_ctl promote`` the PostgreSQL standby."""
    await asyncio.to_thread(_script, "pg-promote")


async def restore() -> None:
    """Every node up and replicating again (rebuilds a pair whose standby was promoted)."""
    await asyncio.to_thread(_script, "start")


# ---- the servers' own view ---------------------------------------------------------------


async def pg_fetch(port: int, sql: str, *args: Any) -> list[Any]:
    """``sql`` as the superuser on one PostgreSQL node (outside any pool)."""
    conn = await asyncpg.connect(host=HOST, port=port, user="postgres", database=DATABASE)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def pg_sessions(port: int, application_name: str) -> int:
    """Backends one PostgreSQL node counts for ``application_name``."""
    rows = await pg_fetch(port, "SELECT count(*) FROM pg_stat_activity "
                                "WHERE application_name = $1", application_name)
    return int(rows[0][0])


def _my_fetch(port: int, sql: str, args: tuple[Any, ...]) -> list[Any]:
    conn = pymysql.connect(host=HOST, port=port, user="root", password="", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args or None)
            return list(cur.fetchall())
    finally:
        conn.close()


async def my_fetch(port: int, sql: str, *args: Any) -> list[Any]:
    """``sql`` as root on one MariaDB node (outside any pool)."""
    return await asyncio.to_thread(_my_fetch, port, sql, args)


async def my_sessions(port: int, user: str) -> int:
    """Connections one MariaDB node counts for ``user``."""
    rows = await my_fetch(port, "SELECT count(*) FROM information_schema.PROCESSLIST "
                                "WHERE USER = %s", user)
    return int(rows[0][0])


async def my_create_user(name: str) -> None:
    """A throwaway account on the MariaDB primary (replicated to the replica), so a test can
    count its own sessions on each node."""
    await my_fetch(MY_PRIMARY, f"CREATE USER IF NOT EXISTS '{name}'@'%%' IDENTIFIED BY %s",
                   PASSWORD)
    await my_fetch(MY_PRIMARY, f"GRANT ALL ON {DATABASE}.* TO '{name}'@'%'")
    await my_fetch(MY_PRIMARY, f"GRANT SLAVE MONITOR ON *.* TO '{name}'@'%'")
