"""Contract tests for the driver seam (app.pools.drivers): every ``DriverAdapter`` method on
asyncpg, aiomysql and asyncmy, on the fast (private) path and on the public-API path
(forced by ``DBPOOL_DRIVER_FALLBACK``), against the real servers.

Each test opens its own driver connection (a unique application_name on PostgreSQL, a
throwaway user on MariaDB) and checks at the end that none is left open.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import aiomysql
import asyncmy
import asyncpg
import pytest
from sqlalchemy.util import greenlet_spawn

from app.domain import ConnectionConfig
from app.pools.drivers import (
    AIOMYSQL,
    ASYNCMY,
    FALLBACK_ENV,
    PG,
    MySqlAdapter,
    PgAdapter,
    forget_checks,
)
from app.pools.drivers.mysql_wire import COM_QUERY, COM_RESET_CONNECTION, Pipeline
from app.pools.managed_pool import ManagedPool
from app.pools.queue_pool import TrimmableQueuePool
from app.settings import Settings
from tests.integration.test_pool_basics import Target, make_target
from tests.support import dbs
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

DRIVERS = ["asyncpg", "aiomysql", "asyncmy"]
_PG_RESET = ("RESET ALL; SELECT 1 FROM pg_prepared_statements WHERE from_sql LIMIT 1",
             "SELECT name FROM pg_prepared_statements WHERE from_sql")
_MY_RESET = Pipeline.of([(COM_RESET_CONNECTION, b""),
                         (COM_QUERY, b"SET NAMES utf8mb4, autocommit = 1")])


@dataclass
class Case:
    """One driver on one path, with a way to open connections and count them."""

    driver: str
    fast: bool
    target: Target
    config: ConnectionConfig
    adapter: PgAdapter | MySqlAdapter

    @property
    def pg(self) -> bool:
        return self.driver == "asyncpg"

    async def connect(self) -> Any:
        c = self.config
        password = c.password.get_secret_value()
        if self.pg:
            return await asyncpg.connect(host=c.host, port=c.port, user=c.username,
                                         password=password, database=c.database,
                                         server_settings={"application_name": c.pool_name})
        if self.driver == "aiomysql":
            return await aiomysql.connect(host=c.host, port=c.port, user=c.username,
                                          password=password, db=c.database, autocommit=True)
        return await asyncmy.connect(host=c.host, port=c.port, user=c.username,
                                     password=password, database=c.database, autocommit=True)

    async def scalar(self, driver: Any, sql: str) -> Any:
        if self.pg:
            return await driver.fetchval(sql)
        async with driver.cursor() as cursor:
            await cursor.execute(sql)
            return (await cursor.fetchone())[0]

    async def open_count(self) -> int:
        return await self.target.count(self.config)


def close(driver: Any) -> None:
    driver.terminate() if isinstance(driver, asyncpg.Connection) else driver.close()


@pytest.fixture(params=[(d, p) for d in DRIVERS for p in ("fast", "public")],
                ids=lambda v: f"{v[0]}-{v[1]}")
def case(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Case]:
    driver, path = request.param
    if path == "public":
        monkeypatch.setenv(FALLBACK_ENV, "1")
    else:
        monkeypatch.delenv(FALLBACK_ENV, raising=False)
    forget_checks()
    adapter = {"asyncpg": PG, "aiomysql": AIOMYSQL, "asyncmy": ASYNCMY}[driver]
    try:
        # Counted by a unique application_name (dbpool:<new id>) / a throwaway user.
        for target in make_target("postgresql" if driver == "asyncpg" else "mariadb"):
            yield Case(driver, path == "fast", target, target.config(), adapter)
    finally:
        forget_checks()  # the next test decides afresh, from its own environment


@pytest.fixture
async def conn(case: Case) -> AsyncIterator[Any]:
    driver = await case.connect()
    try:
        yield driver
    finally:
        close(driver)
    await _until(lambda: case.open_count(), 0)


async def _until(probe: Any, expected: Any, within: float = 5.0) -> None:
    """Poll ``probe()`` (bounded) until it returns ``expected``."""
    async with asyncio.timeout(within):
        while (await probe()) != expected:
            await asyncio.sleep(0.05)


async def test_path_follows_the_switch_and_warns_once(
        case: Case, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.pools.drivers"):
        assert case.adapter.fast is case.fast
        assert case.adapter.fast is case.fast
    warnings = [r for r in caplog.records if "public-API path" in r.getMessage()]
    assert len(warnings) == (0 if case.fast else 1)


async def test_liveness_without_a_round_trip(case: Case, conn: Any) -> None:
    case.adapter.confirm(conn)
    assert case.adapter.fast is case.fast
    assert not case.adapter.is_closed(conn)
    other = await case.connect()
    close(other)
    assert case.adapter.is_closed(other)
    assert case.adapter.is_closed(None)


async def test_a_server_side_close_is_seen(case: Case) -> None:
    if case.fast or case.pg:  # the public MySQL path leaves this to the checkout ping
        driver = await case.connect()
        try:
            await _kill(case, case.adapter.server_id(driver))
            await _until(lambda: _as_future(case.adapter.is_closed(driver)), True)
        finally:
            close(driver)
    await _until(lambda: case.open_count(), 0)


async def _as_future(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


async def _kill(case: Case, server_id: int) -> None:
    if case.pg:
        admin = await dbs.pg_admin()
        try:
            await admin.execute("SELECT pg_terminate_backend($1)", server_id)
        finally:
            await admin.close()
        return
    admin = dbs.my_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"KILL {int(server_id)}")
    finally:
        admin.close()


async def test_server_identity(case: Case, conn: Any) -> None:
    sql = "SELECT pg_backend_pid()" if case.pg else "SELECT CONNECTION_ID()"
    assert case.adapter.server_id(conn) == int(await case.scalar(conn, sql))


async def test_backslash_mode_follows_the_session(case: Case, conn: Any) -> None:
    assert await case.adapter.backslash_escapes(conn) is (not case.pg)
    if case.pg:
        await case.adapter.execute(conn, "SET standard_conforming_strings = off")
    else:
        await case.adapter.execute(conn, "SET SESSION sql_mode = 'NO_BACKSLASH_ESCAPES'")
    assert await case.adapter.backslash_escapes(conn) is case.pg


async def test_limited_fetch_reads_at_most_the_limit(case: Case, conn: Any) -> None:
    sql = ("SELECT g AS n, '{\"a\": 1}'::jsonb AS j FROM generate_series(1, 50) g"
           if case.pg else
           "SELECT seq AS n, JSON_OBJECT('a', 1) AS j FROM seq_1_to_50")
    fetched = await case.adapter.fetch(conn, sql, None, limit=3)
    assert fetched.columns == ["n", "j"]
    assert [row[0] for row in fetched.rows] == [1, 2, 3]
    if case.pg:
        assert fetched.json_columns == frozenset({1}) and not fetched.unread
    else:
        assert fetched.unread  # the rest is still on the wire: the caller discards it


async def test_fetch_reports_affected_rows_and_binds_values(case: Case, conn: Any) -> None:
    table = f"seam_{secrets.token_hex(4)}"
    await case.adapter.execute(conn, f"CREATE TEMPORARY TABLE {table} (x int)")
    insert = (f"INSERT INTO {table} VALUES ($1), ($2)" if case.pg else
              f"INSERT INTO {table} VALUES (%s), (%s)")
    fetched = await case.adapter.fetch(conn, insert, [1, 2], limit=10)
    assert fetched.columns is None and fetched.affected == 2
    everything = await case.adapter.fetch(conn, f"SELECT x FROM {table} ORDER BY x", None,
                                          limit=10)
    assert [row[0] for row in everything.rows] == [1, 2] and not everything.unread


async def test_ping(case: Case, conn: Any) -> None:
    await case.adapter.ping(conn)
    close(conn)
    with pytest.raises(Exception) as failure:
        await case.adapter.ping(conn)
    assert case.adapter.refused_before_send(failure.value) or not case.pg


async def test_a_closed_connection_is_refused_before_sending(case: Case, conn: Any) -> None:
    close(conn)
    with pytest.raises(Exception) as failure:
        await case.adapter.fetch(conn, "SELECT 1", None, limit=1)
    assert case.adapter.refused_before_send(failure.value)
    assert not case.adapter.refused_before_send(ValueError("connection is closed"))


async def test_reset_cleans_the_session_or_says_it_cannot(case: Case, conn: Any) -> None:
    if case.pg:
        await case.adapter.execute(conn, "SET search_path = nowhere")
        assert await PG.reset(conn, _PG_RESET)
        assert "nowhere" not in str(await case.scalar(conn, "SHOW search_path"))
        return
    adapter = case.adapter
    assert isinstance(adapter, MySqlAdapter)
    await adapter.execute(conn, "SET @seam = 5")
    assert await adapter.reset(conn, _MY_RESET) is case.fast
    expected = None if case.fast else 5  # the public path leaves it: the pool discards it
    assert await case.scalar(conn, "SELECT @seam") == expected


async def test_cancel_stops_a_running_statement(case: Case, conn: Any) -> None:
    sleep = "SELECT pg_sleep(30)" if case.pg else "SELECT SLEEP(30)"
    running = asyncio.ensure_future(case.adapter.fetch(conn, sleep, None, limit=1))
    await asyncio.sleep(0.3)
    via = await case.connect()
    try:
        assert await case.adapter.cancel(via, case.adapter.server_id(conn))
    finally:
        close(via)
    async with asyncio.timeout(10):
        if case.pg:
            with pytest.raises(asyncpg.QueryCanceledError):
                await running
        else:
            with pytest.raises(Exception) as stopped:
                await running
            assert stopped.value.args[0] == 1317  # "Query execution was interrupted"


async def _listed(server_id: int) -> bool:
    admin = dbs.my_admin()
    try:
        with admin.cursor() as cursor:
            cursor.execute(f"SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                           f"WHERE ID = {int(server_id)}")
            return bool(cursor.fetchone()[0])
    finally:
        admin.close()


async def _cancelled_mid_statement(case: Case, driver: Any, sql: str) -> None:
    assert isinstance(case.adapter, MySqlAdapter)
    case.adapter.watch_on_cancel(driver)
    running = asyncio.ensure_future(case.adapter.fetch(driver, sql, None, limit=1))
    await asyncio.sleep(0.3)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running


async def test_a_hung_up_sessions_close_is_seen_after_its_answer(case: Case) -> None:
    """``hang_up`` on a read cancelled mid-statement: aiomysql on its private path stops
    sending and reports the server's clean close, which comes once the statement is over
    (here a 1.5 s sleep) and the session gone; otherwise the socket is closed outright
    (None)."""
    if case.pg:
        return  # PostgreSQL cancels with the protocol's CancelRequest: no hang-up
    assert isinstance(case.adapter, MySqlAdapter)
    driver = await case.connect()
    server_id = case.adapter.server_id(driver)
    await _cancelled_mid_statement(case, driver, "SELECT SLEEP(1.5)")
    closed = case.adapter.hang_up(driver)
    assert case.adapter.is_closed(driver)
    if case.driver != "aiomysql" or not case.fast:
        assert closed is None
    else:
        assert closed is not None
        assert not closed.done() and await _listed(server_id)  # still sleeping
        async with asyncio.timeout(10):
            assert await closed is True  # closed cleanly, by the server
        assert not await _listed(server_id)
    await _until(lambda: case.open_count(), 0)


async def test_a_close_by_something_in_between_is_not_taken_for_the_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through a relay that resets both ends when one closes (as the test proxy does), the
    reset comes at once: reported False, the session still running."""
    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    forget_checks()
    for target in make_target("mariadb"):
        case = Case("aiomysql", True, target, target.config(), AIOMYSQL)
        async with TcpProxy(dbs.MY_HOST, dbs.MY_PORT) as proxy:
            c = case.config
            driver = await aiomysql.connect(
                host="127.0.0.1", port=proxy.port, user=c.username,
                password=c.password.get_secret_value(), db=c.database, autocommit=True)
            server_id = AIOMYSQL.server_id(driver)
            await _cancelled_mid_statement(case, driver, "SELECT SLEEP(2)")
            closed = AIOMYSQL.hang_up(driver)
            assert closed is not None
            async with asyncio.timeout(5):
                assert await closed is False
            assert await _listed(server_id)  # the statement runs on: only a kill or its end
        await _until(case.open_count, 0)
    forget_checks()


@pytest.mark.parametrize("public", [False, True])
async def test_sqlalchemy_pool_internals_checked_at_pool_creation(
        public: bool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    if public:
        monkeypatch.setenv(FALLBACK_ENV, "1")
    else:
        monkeypatch.delenv(FALLBACK_ENV, raising=False)
    forget_checks()
    try:
        with caplog.at_level(logging.WARNING, logger="app.pools.drivers"):
            for target in make_target("postgresql"):
                pool = ManagedPool(target.config(min_connections=1), Settings())
                try:
                    queue = pool.engine.pool
                    assert isinstance(queue, TrimmableQueuePool)
                    assert queue.check_surface() is not public
                    # Pre-open works on both paths; trimming only on the fast one.
                    assert await greenlet_spawn(queue.open_idle)
                    taken = queue.take_idle(lambda _: True, 1)
                    assert len(taken) == (0 if public else 1)
                    for record in taken:
                        await greenlet_spawn(queue.close_taken, record)
                finally:
                    await pool.aclose(1.0)
                await _until(partial(target.count, pool.config), 0)
        warned = [r for r in caplog.records if "sqlalchemy.pool" in r.getMessage()]
        assert len(warned) == (1 if public else 0)
    finally:
        forget_checks()
