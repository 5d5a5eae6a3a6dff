"""Faults provoked for real: killed backends, server-side idle timeouts, a database that
goes away or stops answering, and cancelled callers. Checked for leaks and clear errors."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from app.domain import ConnectionConfig
from app.errors import DatabaseError, DbUnavailable
from app.pools.managed_pool import ManagedPool
from app.pools.query import run_query
from app.pools.session_reset import VALIDATE_AFTER
from app.settings import Settings
from tests.integration.test_pool_basics import (
    ENGINES,
    Target,
    make_target,
    pg_config,
    scalar,
    wait_for_count,
)
from tests.support import dbs
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
async def pools() -> AsyncIterator[list[ManagedPool]]:
    made: list[ManagedPool] = []
    yield made
    for pool in made:
        await pool.aclose(1.0)


async def kill_all(target: Target, config: ConnectionConfig) -> int:
    if target.is_pg:
        conn = await dbs.pg_admin()
        try:
            rows = await conn.fetch(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1", config.pool_name)
            return len(rows)
        finally:
            await conn.close()

    def kill() -> int:
        admin = dbs.my_admin()
        try:
            with admin.cursor() as cur:
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s",
                            (config.username,))
                ids = [row[0] for row in cur.fetchall()]
                for pid in ids:
                    cur.execute(f"KILL {int(pid)}")
                return len(ids)
        finally:
            admin.close()

    return await asyncio.to_thread(kill)


async def warm(pool: ManagedPool, n: int) -> None:
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(n):
            conn = await stack.enter_async_context(pool.connection())
            assert await scalar(conn, "SELECT 1") == 1


async def test_all_backends_killed_costs_callers_nothing(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=5)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    await warm(pool, 5)
    assert await kill_all(target, config) == 5
    await wait_for_count(target, config, 0)

    async def one() -> int:
        async with pool.connection() as conn:
            return int(await scalar(conn, "SELECT 1"))

    assert await asyncio.gather(*(one() for _ in range(50))) == [1] * 50
    snap = pool.snapshot()
    assert snap.checked_out == 0 and snap.open == await target.count(config)
    assert snap.state == "ok"


async def test_backend_killed_while_checked_out_is_discarded(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=1)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    with pytest.raises(Exception):  # noqa: B017 - the driver's own "connection lost"
        async with pool.connection() as conn:
            await scalar(conn, "SELECT 1")
            await kill_all(target, config)
            await asyncio.sleep(0.2)
            await scalar(conn, "SELECT 1")
    async with pool.connection() as conn:
        assert await scalar(conn, "SELECT 1") == 1
    assert pool.snapshot().open == await target.count(config) == 1


async def test_mariadb_wait_timeout_expiry_is_invisible(pools: list[ManagedPool]) -> None:
    from tests.integration.test_pool_basics import mysql_user

    for user, password in mysql_user():
        target = Target("mariadb", user, password)
        config = target.config(max_connections=3)
        pool = ManagedPool(config, Settings())
        pools.append(pool)

        await warm(pool, 3)
        # After our reset on return, shorten each idle session's wait_timeout (not the global
        # one): the server then drops the idle pooled connections by itself.
        for lent in pool._lender._idle:
            await lent.driver.query("SET SESSION wait_timeout = 1")
        assert await target.count(config) == 3
        assert await wait_for_count(target, config, 0) == 0  # the server closed them
        await asyncio.sleep(0.1)
        assert pool.snapshot().open == 0  # seen from our side too, without a round trip
        for _ in range(10):
            async with pool.connection() as conn:
                assert await scalar(conn, "SELECT 1") == 1
        assert pool.snapshot().open == await target.count(config) == 1
        assert await pool.trim_idle(3600) == 2  # the dead ones are let go for good
        assert pool.snapshot().open == await target.count(config) == 1


async def test_circuit_opens_fails_fast_and_recovers(pools: list[ManagedPool]) -> None:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as proxy:
        pool = ManagedPool(pg_config(port=proxy.port, connection_timeout=2), Settings())
        pools.append(pool)
        proxy.cut()
        for _ in range(3):
            with pytest.raises(DbUnavailable):
                async with pool.connection():
                    pass
        assert pool.snapshot().state == "circuit_open"
        dropped = proxy.dropped
        with pytest.raises(DbUnavailable) as info:
            async with pool.connection():
                pass
        assert info.value.details.get("circuitOpen") and info.value.retry_after
        assert proxy.dropped == dropped  # failed fast: no connect attempt
        assert pool.snapshot().next_probe_at is not None
        assert pool.snapshot().last_probe_error == "DB_UNAVAILABLE"
        assert pool.snapshot().stats.connect_errors >= 3
        proxy.restore()
        async with asyncio.timeout(3):  # the background probe closes it: no request needed
            while pool.snapshot().state != "ok":
                await asyncio.sleep(0.05)
        snap = pool.snapshot()
        assert (snap.healthy, snap.next_probe_at, snap.last_probe_error) == (True, None, None)
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT 1") == 1


async def test_stalled_database_fails_within_the_timeouts(pools: list[ManagedPool]) -> None:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as proxy:
        config = pg_config(port=proxy.port, connection_timeout=1)
        pool = ManagedPool(config, Settings())
        pools.append(pool)
        await warm(pool, 1)
        proxy.stall()
        # Past the validation window, so the checkout pings (a fresher one is trusted).
        await asyncio.sleep(VALIDATE_AFTER + 0.1)
        started = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseError):
            async with pool.connection():
                pass
        # ping (<= 1 s) then one reconnect (<= 1 s), with slack for a loaded machine
        assert asyncio.get_running_loop().time() - started < 4
        assert pool.snapshot().checked_out == 0 and pool._gate.in_use == 0
        proxy.restore()


async def test_cancelled_caller_returns_its_connection(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    sleep = "SELECT pg_sleep(5)" if target.is_pg else "SELECT SLEEP(5)"
    started = asyncio.Event()

    async def slow() -> None:
        async with pool.connection() as conn:
            started.set()
            await scalar(conn, sleep)

    tasks = [asyncio.create_task(slow()) for _ in range(4)]  # two run, two wait
    await started.wait()
    await asyncio.sleep(0.1)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for _ in range(50):
        if not pool._releases:
            break
        await asyncio.sleep(0.05)
    assert (pool._gate.in_use, pool._gate.waiting, pool.checked_out) == (0, 0, 0)
    assert await target.count(config) <= 2
    async with pool.connection() as conn:
        assert await scalar(conn, "SELECT 1") == 1


async def test_connection_dead_before_sending_is_retried_once_on_a_fresh_one(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=1)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    await warm(pool, 1)
    calls: list[int] = []

    async def work(conn: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # the socket dies between checkout and the statement
            driver = (await conn.get_raw_connection()).driver_connection
            (getattr(driver, "terminate", None) or driver.close)()
        return await run_query(conn, config, "SELECT 41 + 1 AS answer", max_rows=1)

    result = await pool.run(work)
    assert result.rows == [{"answer": 42}] and len(calls) == 2
    assert pool.snapshot().checked_out == 0
    assert pool.snapshot().open == await target.count(config) == 1


async def test_statement_lost_mid_flight_is_never_run_twice(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=1)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    table = f"once_{secrets.token_hex(4)}"
    sleep = "pg_sleep(0.6)" if target.is_pg else "SLEEP(0.6)"
    await pool.run(lambda conn: run_query(conn, config, f"CREATE TABLE {table} (x int)",
                                          max_rows=1))
    calls: list[int] = []

    async def insert(conn: Any) -> Any:
        calls.append(1)
        return await run_query(conn, config, f"INSERT INTO {table} SELECT 1 FROM (SELECT {sleep})"
                               " AS s", max_rows=1)

    async def killer() -> None:
        await asyncio.sleep(0.25)  # the INSERT is running on the server now
        assert await kill_all(target, config) == 1

    try:
        results = await asyncio.gather(pool.run(insert), killer(), return_exceptions=True)
        assert isinstance(results[0], DatabaseError), results
        assert len(calls) == 1  # the server may have seen it: never sent again
        count = await pool.run(lambda conn: run_query(
            conn, config, f"SELECT count(*) AS n FROM {table}", max_rows=1))
        assert count.rows[0]["n"] in (0, 1)
    finally:
        await pool.run(lambda conn: run_query(conn, config, f"DROP TABLE {table}", max_rows=1))


async def _cancel_mid_reset(pool: ManagedPool, proxy: TcpProxy, config: Any) -> None:
    """Run one statement that needs a reset on return (a plain read would return with no
    round trip), stall the wire so the reset hangs, cancel the caller there."""
    ran = asyncio.Event()

    async def work(conn: Any) -> Any:
        result = await run_query(conn, config, "SET work_mem = '2MB'", max_rows=1)
        proxy.stall()  # the reset on return now hangs on the wire
        ran.set()
        return result

    task = asyncio.create_task(pool.run(work))
    await ran.wait()
    await asyncio.sleep(0.2)  # inside the reset
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 1)  # the caller is not held by the reset


async def wait_for_free_slots(pool: ManagedPool, within: float) -> None:
    async with asyncio.timeout(within):
        while pool._gate.in_use or pool.checked_out:
            await asyncio.sleep(0.02)


async def test_a_cancel_during_the_reset_lets_the_reset_finish(
    pools: list[ManagedPool], caplog: pytest.LogCaptureFixture
) -> None:
    # A client that hangs up just as its statement ends cancels the request mid-reset. The
    # reset is shielded: it completes and the connection goes back to the pool, clean, with
    # no "Exception during reset" ERROR (a CancelledError traceback) from SQLAlchemy.
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as proxy:
        config = pg_config(port=proxy.port, connection_timeout=2)
        pool = ManagedPool(config, Settings())
        pools.append(pool)
        await warm(pool, 1)
        await _cancel_mid_reset(pool, proxy, config)
        proxy.restore()
        await wait_for_free_slots(pool, 3)
        assert pool.open == 1  # reset and returned, not thrown away
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT 1") == 1
        assert pool.open == 1
    assert "Exception during reset" not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_reset_that_hangs_discards_the_connection_in_time(
    pools: list[ManagedPool],
) -> None:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as proxy:
        config = pg_config(port=proxy.port, connection_timeout=1)
        pool = ManagedPool(config, Settings())
        pools.append(pool)
        await warm(pool, 1)
        await _cancel_mid_reset(pool, proxy, config)
        await wait_for_free_slots(pool, config.connection_timeout + 2)  # the reset's bound
        assert pool.open == 0  # invalidated, not returned
        proxy.restore()
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT 1") == 1
        assert pool.open == 1
