"""A pool replaced while busy (PATCH, rebuild) and its successor share one budget: the
database never sees more than ``max_connections`` sessions for the connection (found by the
soak: 7 sessions on a pool of 4 right after a PATCH, the old pool's idle and in-flight
connections next to the new pool's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from app.errors import PoolExhausted
from app.pools.manager import PoolManager
from app.settings import Settings
from tests.integration.test_pool_basics import (
    ENGINES,
    DictResolver,
    Target,
    make_target,
    scalar,
    wait_for_count,
)

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

MAX = 2


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
async def manager() -> AsyncIterator[tuple[PoolManager, DictResolver]]:
    resolver = DictResolver()
    made = PoolManager(resolver, Settings(shutdown_grace_seconds=2))
    yield made, resolver
    await made.aclose()


def _sleep(target: Target, seconds: float) -> str:
    return f"SELECT pg_sleep({seconds})" if target.is_pg else f"SELECT SLEEP({seconds})"


async def _peak(target: Target, config: object, stop: asyncio.Event) -> int:
    """The highest session count the database reports until ``stop`` (polled). A reading
    over ``MAX`` is taken again 0.25 s later and the lower one kept, as the soak does: a
    session closed by the pool can take a loaded server a moment to tear down, while the
    overshoot this guards against (a replaced pool's connections left open) lasts seconds."""
    peak = 0
    while not stop.is_set():
        count = await target.count(config)  # type: ignore[arg-type]
        if count > MAX:
            await asyncio.sleep(0.25)
            count = min(count, await target.count(config))  # type: ignore[arg-type]
        peak = max(peak, count)
        await asyncio.sleep(0.02)
    return peak


async def test_replaced_pool_and_successor_stay_within_max_connections(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config(max_connections=MAX, connection_timeout=5)
    resolver.configs[config.id] = config
    old = await mgr.get(config.id)

    async def hold(pool_seconds: float) -> None:
        pool = await mgr.get(config.id)
        async with pool.connection() as conn:
            await conn.exec_driver_sql(_sleep(target, pool_seconds))

    # The old pool: one connection busy, one idle.
    async with old.connection() as a, old.connection():
        await scalar(a, "SELECT 1")
    busy = asyncio.create_task(hold(1.0))
    await asyncio.sleep(0.3)
    assert old.checked_out == 1 and old.open == 2

    stop = asyncio.Event()
    watching = asyncio.create_task(_peak(target, config, stop))
    resolver.configs[config.id] = replace(config, config_version=2)
    await mgr.invalidate(config.id)  # what a PATCH does
    new = await mgr.get(config.id)
    assert new is not old
    # Four requests at once on the new pool while the old one still finishes its statement.
    await asyncio.gather(*(hold(0.3) for _ in range(4)), busy)
    stop.set()
    assert await watching <= MAX
    assert old.snapshot().open == 0  # its idle one closed at once, the busy one on return
    assert await wait_for_count(target, config, new.open) == new.open <= MAX


async def test_a_lowered_maximum_applies_across_the_rebuild(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config(max_connections=MAX, connection_timeout=0.5)
    resolver.configs[config.id] = config
    old = await mgr.get(config.id)
    async with old.connection() as conn:
        resolver.configs[config.id] = replace(config, max_connections=1, config_version=2)
        await mgr.invalidate(config.id)
        new = await mgr.get(config.id)
        # The old pool's request holds the one slot the new maximum allows: wait, then 503.
        with pytest.raises(PoolExhausted):
            async with new.connection():
                pass
        assert await scalar(conn, "SELECT 1") == 1
    async with new.connection() as conn2:  # freed by the old pool's return
        assert await scalar(conn2, "SELECT 2") == 2
    assert await wait_for_count(target, config, 1) == 1
