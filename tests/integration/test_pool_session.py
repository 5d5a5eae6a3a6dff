"""Clean hand-over: nothing one request does to its session reaches the next request.

Every test runs with max_connections=1 and checks the backend id, so the second request
surely runs on the very connection the first one dirtied (on a MySQL driver's public path,
``DBPOOL_DRIVER_FALLBACK``, the connection is discarded on return instead: a new one).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pymysql.constants.SERVER_STATUS import SERVER_STATUS_AUTOCOMMIT, SERVER_STATUS_IN_TRANS
from sqlalchemy import text

from app.pools.managed_pool import ManagedPool
from app.pools.query import run_query
from app.pools.session_reset import mysql_session_statements
from app.settings import Settings
from tests.integration.test_pool_basics import ENGINES, Target, make_target, scalar
from tests.support import dbs
from tests.support.seam import reuses_sessions

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
async def pool(target: Target) -> AsyncIterator[ManagedPool]:
    managed = ManagedPool(target.config(max_connections=1), Settings())
    yield managed
    await managed.aclose(1.0)


async def backend_id(pool: ManagedPool, conn: Any) -> int:
    sql = "SELECT pg_backend_pid()" if pool.config.db_type == "postgresql" else (
        "SELECT CONNECTION_ID()")
    return int(await scalar(conn, sql))


async def two_requests(pool: ManagedPool, dirty: list[str], probe: str) -> Any:
    """Run ``dirty`` in one request, ``probe`` in the next on the same connection."""
    async with pool.connection() as conn:
        first = await backend_id(pool, conn)
        for sql in dirty:
            await conn.exec_driver_sql(sql)
    async with pool.connection() as conn:
        assert (await backend_id(pool, conn) == first) == reuses_sessions(pool.config.db_type)
        return await scalar(conn, probe)


def is_pg(pool: ManagedPool) -> bool:
    return pool.config.db_type == "postgresql"


async def test_session_settings_do_not_leak(pool: ManagedPool) -> None:
    if is_pg(pool):
        value = await two_requests(pool, ["SET work_mem = '1234kB'"], "SHOW work_mem")
        assert value != "1234kB"
        value = await two_requests(pool, ["SET statement_timeout = 1"], "SHOW statement_timeout")
        assert value == "10s"  # our startup-packet setting survives the reset
    else:
        value = await two_requests(
            pool, ["SET SESSION sort_buffer_size = 40960", "SET SESSION max_statement_time = 1",
                   "SET NAMES latin1", "SET autocommit = 0"],
            "SELECT CONCAT_WS(',', @@sort_buffer_size, @@max_statement_time,"
            " @@character_set_client, @@autocommit)",
        )
        sort_buffer, max_time, charset, autocommit = value.split(",")
        assert sort_buffer != "40960"
        assert float(max_time) == 10.0  # re-applied after COM_RESET_CONNECTION
        assert charset == "utf8mb4" and autocommit in ("1", "ON")  # sessions autocommit


async def test_user_variables_do_not_leak(pool: ManagedPool) -> None:
    if is_pg(pool):
        value = await two_requests(
            pool, ["SET myapp.secret = '42'"], "SELECT current_setting('myapp.secret', true)")
        assert value in (None, "")
    else:
        assert await two_requests(pool, ["SET @secret = 42"], "SELECT @secret") is None


async def test_search_path_does_not_leak(pool: ManagedPool) -> None:
    if not is_pg(pool):
        value = await two_requests(pool, ["USE information_schema"], "SELECT DATABASE()")
        assert value == pool.config.database
        return
    value = await two_requests(pool, ["SET search_path TO pg_catalog"], "SHOW search_path")
    assert value == '"$user", public'


async def test_temporary_tables_do_not_leak(pool: ManagedPool) -> None:
    name = f"tmp_{secrets.token_hex(4)}"
    if is_pg(pool):
        probe = f"SELECT to_regclass('pg_temp.{name}') IS NULL"
        assert await two_requests(pool, [f"CREATE TEMP TABLE {name} (x int)"], probe) is True
    else:
        async with pool.connection() as conn:
            first = await backend_id(pool, conn)
            await conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} (x int)")
        async with pool.connection() as conn:
            assert (await backend_id(pool, conn) == first) == reuses_sessions(
                pool.config.db_type)
            with pytest.raises(Exception, match="doesn't exist"):
                await conn.exec_driver_sql(f"SELECT * FROM {name}")


async def test_locks_do_not_leak(pool: ManagedPool) -> None:
    key = secrets.randbelow(2**31)
    if is_pg(pool):
        probe = (
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            "AND pid = pg_backend_pid()"
        )
        assert await two_requests(pool, [f"SELECT pg_advisory_lock({key})"], probe) == 0
    else:
        probe = f"SELECT IS_USED_LOCK('dbpool_{key}')"
        assert await two_requests(pool, [f"SELECT GET_LOCK('dbpool_{key}', 0)"], probe) is None


async def test_open_transactions_do_not_leak(pool: ManagedPool) -> None:
    table = f"tx_{secrets.token_hex(4)}"
    async with pool.connection() as conn:
        await conn.exec_driver_sql(f"CREATE TABLE {table} (x int)")
        await conn.commit()
    try:
        if is_pg(pool):
            count = await two_requests(pool, [f"INSERT INTO {table} VALUES (1)"],
                                       f"SELECT count(*) FROM {table}")
            assert count == 0
        else:  # sessions run in autocommit: a transaction is opened explicitly
            async with pool.connection() as conn:
                for sql in ("START TRANSACTION", f"INSERT INTO {table} VALUES (1)"):
                    await run_query(conn, pool.config, sql, max_rows=10)
            async with pool.connection() as conn:
                result = await run_query(conn, pool.config, f"SELECT count(*) AS n FROM {table}",
                                         max_rows=10)
                assert result.rows == [{"n": 0}]
        if is_pg(pool):  # a BEGIN sent as plain SQL, behind the adapter's back
            raw_begin = ["COMMIT", "BEGIN", f"INSERT INTO {table} VALUES (2)"]
            assert await two_requests(pool, raw_begin, f"SELECT count(*) FROM {table}") == 0
    finally:
        async with pool.connection() as conn:
            await conn.exec_driver_sql(f"DROP TABLE {table}")
            await conn.commit()


async def test_bound_parameters_work_across_resets(pool: ManagedPool) -> None:
    # DISCARD ALL drops server-side prepared statements: no cache may remember them.
    for i in range(5):
        async with pool.connection() as conn:
            result = await conn.execute(text("SELECT :x + 1 AS y"), {"x": i})
            assert result.scalar() == i + 1


@pytest.mark.parametrize(
    ("mariadb", "read_only", "expected"),
    [
        (True, False, ["SET SESSION max_statement_time = 2.500"]),
        (False, False, ["SET SESSION max_execution_time = 2500"]),
        (False, True, ["SET SESSION max_execution_time = 2500",
                       "SET SESSION TRANSACTION READ ONLY"]),
    ],
)
def test_mysql_session_statements(mariadb: bool, read_only: bool, expected: list[str]) -> None:
    assert mysql_session_statements(
        mariadb=mariadb, query_timeout=2.5, read_only=read_only) == expected
    combined = mysql_session_statements(
        mariadb=mariadb, query_timeout=2.5, read_only=False, also=("NAMES utf8mb4",))
    assert combined[0].startswith("SET NAMES utf8mb4, SESSION max_")


async def test_asyncmy_driver_gets_the_same_hygiene() -> None:
    for target_ in make_target("mariadb"):
        config = target_.config(max_connections=1, read_only=True)
        pool = ManagedPool(config, Settings(mysql_driver="asyncmy"))
        try:
            seen = []
            for _ in range(2):
                async with pool.connection() as conn:
                    result = await conn.exec_driver_sql(
                        "SELECT @@max_statement_time, @@tx_read_only, @a, CONNECTION_ID()")
                    seen.append(tuple(result.one()))
                    await conn.exec_driver_sql("SET @a = 5")
            assert seen[0][:3] == seen[1][:3] == (10.0, 1, None)
            assert (seen[0][3] == seen[1][3]) == reuses_sessions("mariadb", "asyncmy")
        finally:
            await pool.aclose(1.0)


@pytest.mark.parametrize("driver", ["aiomysql", "asyncmy"])
async def test_mysql_reset_leaves_the_drivers_status_flags_true(driver: str) -> None:
    # The reset reads its OK packets itself; the driver's own view (in a transaction?
    # autocommit?) must still follow what the server said.
    for target_ in make_target("mariadb"):
        pool = ManagedPool(target_.config(max_connections=1), Settings(mysql_driver=driver))
        try:
            async with pool.connection() as conn:
                await run_query(conn, pool.config, "START TRANSACTION", max_rows=1)
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw.server_status & SERVER_STATUS_IN_TRANS
            async with pool.connection() as conn:
                again = (await conn.get_raw_connection()).driver_connection
                assert (again is raw) == reuses_sessions("mariadb", driver)
                assert not again.server_status & SERVER_STATUS_IN_TRANS
                assert again.server_status & SERVER_STATUS_AUTOCOMMIT
        finally:
            await pool.aclose(1.0)


async def test_a_refused_mysql_reset_discards_the_connection() -> None:
    # The database is dropped while a connection is lent: the reset's COM_INIT_DB is refused
    # on return, and the connection must be discarded, not handed to the next request.
    name = f"dbpool_gone_{secrets.token_hex(4)}"
    for target_ in make_target("mariadb"):
        with contextlib.closing(dbs.my_admin()) as admin, admin.cursor() as cur:
            cur.execute(f"CREATE DATABASE {name}")
            cur.execute(f"GRANT ALL ON {name}.* TO '{target_.user}'@'%'")
        pool = ManagedPool(target_.config(max_connections=1, database=name), Settings())
        try:
            async with pool.connection() as conn:
                first = await backend_id(pool, conn)
                with contextlib.closing(dbs.my_admin()) as admin, admin.cursor() as cur:
                    cur.execute(f"DROP DATABASE {name}")
            assert pool.open == 0  # discarded, not returned dirty
        finally:
            await pool.aclose(1.0)
            with contextlib.closing(dbs.my_admin()) as admin, admin.cursor() as cur:
                cur.execute(f"DROP DATABASE IF EXISTS {name}")
        assert first > 0
