"""The lender (``app.pools.lender``) against the real servers: connections stay checked out of
SQLAlchemy's pool between requests, yet every figure matches the database's own session list,
and SQLAlchemy still recycles, replaces, trims and disposes them."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event

from app.domain import ConnectionConfig
from app.pools import session_reset
from app.pools.drivers import FALLBACK_ENV, forget_checks
from app.pools.managed_pool import ManagedPool
from app.pools.manager import PoolManager
from app.pools.query import run_query
from app.pools.queue_pool import TrimmableQueuePool
from app.settings import Settings
from tests.integration.test_pool_basics import (
    ENGINES,
    DictResolver,
    Target,
    make_target,
    wait_for_count,
)
from tests.support import dbs

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]


@pytest.fixture(autouse=True)
def fast_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The lender on the drivers' fast path, even in a ``DBPOOL_DRIVER_FALLBACK`` run: the
    public path keeps nothing to lend on MySQL (a connection it cannot reset is discarded
    on return) and cannot trim; test_pool_session and test_driver_adapters cover it."""
    monkeypatch.delenv(FALLBACK_ENV, raising=False)
    forget_checks()
    yield
    monkeypatch.undo()
    forget_checks()


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest, fast_path: None) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
async def pools() -> AsyncIterator[list[ManagedPool]]:
    made: list[ManagedPool] = []
    yield made
    for pool in made:
        await pool.aclose(1.0)


def _me(config: ConnectionConfig) -> str:
    return "SELECT pg_backend_pid() AS me" if config.db_type == "postgresql" else \
        "SELECT CONNECTION_ID() AS me"


async def backend(pool: ManagedPool) -> int:
    """The server's id of the session one request ran on (through the query path)."""
    result = await pool.run(lambda conn: run_query(conn, pool.config, _me(pool.config),
                                                   max_rows=1))
    return int(result.rows[0]["me"])


async def session_ids(target: Target, config: ConnectionConfig) -> set[int]:
    """The ids of the sessions the database lists for the pool's login."""
    if target.is_pg:
        admin = await dbs.pg_admin()
        try:
            rows = await admin.fetch("SELECT pid FROM pg_stat_activity "
                                     "WHERE application_name = $1", config.pool_name)
            return {int(r[0]) for r in rows}
        finally:
            await admin.close()

    def ids() -> set[int]:
        with contextlib.closing(dbs.my_admin()) as admin, admin.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s",
                        (config.username,))
            return {int(row[0]) for row in cur.fetchall()}

    return await asyncio.to_thread(ids)


async def kill(target: Target, session: int) -> None:
    if target.is_pg:
        admin = await dbs.pg_admin()
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", session)
        finally:
            await admin.close()
        return

    def run() -> None:
        with contextlib.closing(dbs.my_admin()) as admin, admin.cursor() as cur:
            cur.execute(f"KILL {int(session)}")

    await asyncio.to_thread(run)


@pytest.fixture
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Connections stay vouched for (no sign of life needed) for the test's whole length, so
    a stall of the loaded machine cannot send one back through SQLAlchemy's checkout."""
    monkeypatch.setattr(session_reset, "VALIDATE_AFTER", 60.0)


def checkouts_of(pool: ManagedPool) -> list[int]:
    """A list that grows by one at every checkout from the engine's (SQLAlchemy's) pool."""
    seen: list[int] = []
    event.listen(pool.engine.sync_engine, "checkout", lambda *_: seen.append(1))
    return seen


async def test_figures_match_the_database_while_lent_and_after_trimming(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=4, min_connections=0)
    pool = ManagedPool(config, Settings())
    pools.append(pool)

    async def figures() -> tuple[int, int, int]:
        snap = pool.snapshot()
        assert snap.open == snap.checked_out + snap.checked_in
        return snap.checked_out, snap.checked_in, snap.open

    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(pool.connection()) for _ in range(3)]
        assert len(held) == 3
        assert await figures() == (3, 0, 3) and await target.count(config) == 3
        await stack.aclose()  # all three back: idle in the lender, still open on the server
    assert await figures() == (0, 3, 3) and await target.count(config) == 3
    async with pool.connection():
        assert await figures() == (1, 2, 3) and await target.count(config) == 3
        await asyncio.sleep(0.2)
        assert await pool.trim_idle(0.1) == 2  # the two idle ones; the lent one stays
        assert await wait_for_count(target, config, 1) == 1
        assert await figures() == (1, 0, 1)
    assert await figures() == (0, 1, 1) and await target.count(config) == 1
    entry = pool.snapshot()
    assert entry.stats.acquisitions == 4


async def test_a_connection_lent_many_times_is_checked_out_of_sqlalchemy_once(
    target: Target, pools: list[ManagedPool], patient: None
) -> None:
    config = target.config(max_connections=3)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    checkouts = checkouts_of(pool)
    checkins: list[int] = []
    event.listen(pool.engine.sync_engine, "checkin", lambda *_: checkins.append(1))
    sessions = {await backend(pool) for _ in range(20)}
    assert len(sessions) == 1 and len(checkouts) == 1 and checkins == []
    # Three at a time: at most three checkouts, whatever the number of requests.
    for _ in range(10):
        found = await asyncio.gather(*(backend(pool) for _ in range(3)))
        sessions.update(found)
    assert len(checkouts) <= 3 and checkins == []
    assert sessions == await session_ids(target, config)
    assert pool.snapshot().stats.acquisitions == 50


async def test_session_state_is_reset_between_lends_of_one_connection(
    target: Target, pools: list[ManagedPool], patient: None
) -> None:
    config = target.config(max_connections=1)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    checkouts = checkouts_of(pool)
    dirty = "SET application_name = 'leak'" if target.is_pg else "SET @leak = 1"
    probe = "SELECT current_setting('application_name') AS v" if target.is_pg else \
        "SELECT @leak AS v"
    first = await backend(pool)
    await pool.run(lambda conn: run_query(conn, config, dirty, max_rows=1))
    result = await pool.run(lambda conn: run_query(conn, config, probe, max_rows=1))
    assert result.rows[0]["v"] == (config.pool_name if target.is_pg else None)
    assert await backend(pool) == first and len(checkouts) == 1


async def test_recycle_still_replaces_an_old_connection(
    target: Target, pools: list[ManagedPool], patient: None
) -> None:
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings(pool_recycle_seconds=1.0))
    pools.append(pool)
    checkouts = checkouts_of(pool)
    seen = [await backend(pool)]
    loop = asyncio.get_running_loop()
    ends = loop.time() + 1.8
    while loop.time() < ends:  # vouched for all along (``patient``): only its age retires it
        await asyncio.sleep(0.2)
        seen.append(await backend(pool))
    assert seen[0] != seen[-1], "never recycled"
    assert len(checkouts) >= 2
    assert await wait_for_count(target, config, 1) == 1
    assert pool.snapshot().open == 1 and await session_ids(target, config) == {seen[-1]}


async def test_idle_trim_closes_the_session_on_the_server(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    session = await backend(pool)
    assert await session_ids(target, config) == {session}
    await asyncio.sleep(0.15)
    assert await pool.trim_idle(0.1) == 1
    assert await wait_for_count(target, config, 0) == 0
    assert pool.snapshot().open == 0
    assert await backend(pool) != session  # a new one, opened on demand
    assert pool.snapshot().open == await target.count(config) == 1


async def test_the_surplus_goes_idle_under_light_load_and_is_trimmed(
    target: Target, pools: list[ManagedPool]
) -> None:
    # Last in, first out: one request at a time keeps reusing the same connection, so the
    # others sit idle long enough to be trimmed (first in, first out would keep all busy).
    config = target.config(max_connections=3)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    await asyncio.gather(*(pool.run(lambda conn: asyncio.sleep(0.1)) for _ in range(3)))
    assert await target.count(config) == 3
    used = set()
    loop = asyncio.get_running_loop()
    ends = loop.time() + 0.8
    while loop.time() < ends:
        used.add(await backend(pool))
        await asyncio.sleep(0.05)
    assert len(used) == 1
    assert await pool.trim_idle(0.5) == 2
    assert await wait_for_count(target, config, 1) == 1
    assert await session_ids(target, config) == used


async def test_a_killed_backend_waiting_in_the_lender_is_replaced_silently(
    target: Target, pools: list[ManagedPool]
) -> None:
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    first = await backend(pool)
    await kill(target, first)
    assert await wait_for_count(target, config, 0) == 0
    await asyncio.sleep(0.05)  # the loop sees the server's close
    assert pool.snapshot().open == 0  # a dead one is not counted open
    second = await backend(pool)  # no error for the caller
    assert second != first
    assert pool.snapshot().open == await target.count(config) == 1
    assert pool.snapshot().stats.query_errors == 0


async def test_dispose_returns_every_connection_and_leaves_no_session(
    target: Target,
) -> None:
    config = target.config(max_connections=3)
    pool = ManagedPool(config, Settings())
    queue = pool.engine.pool
    assert isinstance(queue, TrimmableQueuePool)
    await asyncio.gather(*(pool.run(lambda conn: asyncio.sleep(0.05)) for _ in range(3)))
    assert queue.checkedout() == 3  # kept checked out by the lender, idle
    assert pool.snapshot().checked_out == 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await pool.aclose(1.0)
        gc.collect()
    assert queue.checkedout() == 0  # every one handed back to SQLAlchemy, then closed
    assert await wait_for_count(target, config, 0) == 0
    assert not [w for w in caught if "garbage collector" in str(w.message)]


async def test_a_rebuild_leaves_no_session_of_the_old_pool(target: Target) -> None:
    resolver = DictResolver()
    manager = PoolManager(resolver, Settings(shutdown_grace_seconds=1))
    try:
        config = target.config(max_connections=2)
        resolver.configs[config.id] = config
        old = await manager.get(config.id)
        old_sessions = set(await asyncio.gather(*(
            old.run(lambda conn: _slow_backend(old, conn)) for _ in range(2))))
        assert await session_ids(target, config) == old_sessions
        resolver.configs[config.id] = replace(config, config_version=2)
        await manager.invalidate(config.id)  # what a PATCH does
        new = await manager.get(config.id)
        assert new is not old
        fresh = await backend(new)
        assert fresh not in old_sessions
        assert await wait_for_count(target, config, 1) == 1
        assert await session_ids(target, config) == {fresh}
        assert old.snapshot().open == 0
    finally:
        await manager.aclose()
    assert await wait_for_count(target, config, 0) == 0


async def _slow_backend(pool: ManagedPool, conn: Any) -> int:
    result = await run_query(conn, pool.config, _me(pool.config), max_rows=1)
    await asyncio.sleep(0.1)  # both lent at once: two connections
    return int(result.rows[0]["me"])


async def test_health_check_uses_an_idle_lent_connection(
    target: Target, pools: list[ManagedPool], patient: None
) -> None:
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    session = await backend(pool)
    checkouts = checkouts_of(pool)
    assert await pool.health_check() is True
    assert checkouts == [] and await session_ids(target, config) == {session}
    snap = pool.snapshot()
    assert (snap.checked_out, snap.checked_in, snap.stats.acquisitions) == (0, 1, 1)


async def test_stale_and_old_idle_connections_never_make_a_request_wait_in_sqlalchemy(
    target: Target, pools: list[ManagedPool]
) -> None:
    # Every idle connection is past VALIDATE_AFTER (and past pool_recycle): each request
    # hands the ones it meets back to SQLAlchemy's pool and checks one out there (pinged or
    # recycled), many at once. None times out, and the figures stay the database's.
    config = target.config(max_connections=3, connection_timeout=2)
    pool = ManagedPool(config, Settings(pool_recycle_seconds=1.0))
    pools.append(pool)
    for _ in range(3):
        await asyncio.gather(*(pool.run(lambda conn: asyncio.sleep(0.05)) for _ in range(3)))
        await asyncio.sleep(1.1)  # stale and old
        found = await asyncio.gather(*(backend(pool) for _ in range(30)))
        assert len(found) == 30
    snap = pool.snapshot()
    assert snap.checked_out == 0 and snap.stats.acquire_timeouts == 0
    assert await wait_for_count(target, config, snap.open) == snap.open <= 3


async def test_a_request_on_a_connection_the_monitor_opened_shows_the_pool_ok(
    target: Target, pools: list[ManagedPool], patient: None
) -> None:
    # A cluster's role probe opens the first connection; the first request then gets it
    # from the lender (no new checkout) and still counts as proof the node is healthy.
    config = target.config(max_connections=2)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    checkouts = checkouts_of(pool)
    assert await pool.inspect("SELECT 1 AS one") == [{"one": 1}]
    await backend(pool)
    assert len(checkouts) == 1
    assert pool.snapshot().state == "ok"


async def test_a_clean_connection_the_lender_hands_back_is_pinged_at_its_next_checkout(
    target: Target, pools: list[ManagedPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plain read leaves the session clean: its return sends nothing. Past VALIDATE_AFTER
    # the lender cannot vouch for it and hands it back to SQLAlchemy's pool, whose reset
    # event finds it clean: that is no proof of life, so the checkout that follows pings.
    monkeypatch.setattr(session_reset, "VALIDATE_AFTER", 0.2)
    pings: list[int] = []
    name = "_pg_ping" if target.is_pg else "_mysql_ping"
    real = getattr(session_reset, name)

    async def counted(raw: Any) -> None:
        pings.append(1)
        await real(raw)

    monkeypatch.setattr(session_reset, name, counted)
    config = target.config(max_connections=1)
    pool = ManagedPool(config, Settings())
    pools.append(pool)
    checkouts = checkouts_of(pool)
    first = await backend(pool)
    assert (len(checkouts), pings) == (1, [])  # a new connection: no ping
    assert await backend(pool) == first and (len(checkouts), pings) == (1, [])  # vouched for
    await asyncio.sleep(0.4)
    assert await backend(pool) == first  # the same session, after a ping on its checkout
    assert (len(checkouts), pings) == (2, [1])
