"""PoolManager on the real servers: single flight, invalidation with work in flight,
rebuild, version sync, eviction and closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from app.errors import ConnectionNotFound
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


@pytest.fixture(params=ENGINES)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    yield from make_target(request.param)


@pytest.fixture
async def manager() -> AsyncIterator[tuple[PoolManager, DictResolver]]:
    resolver = DictResolver()
    made = PoolManager(resolver, Settings(shutdown_grace_seconds=1))
    yield made, resolver
    await made.aclose()


async def test_single_flight(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config()
    resolver.configs[config.id] = config
    pools = await asyncio.gather(*(mgr.get(config.id) for _ in range(100)))
    assert len({id(p) for p in pools}) == 1
    assert resolver.calls == 1
    assert await mgr.get(config.id) is pools[0] and resolver.calls == 1  # no registry trip
    assert [s.connection_id for s in mgr.snapshots()] == [config.id]
    assert mgr.snapshot(config.id) is not None and mgr.snapshot(config.id + 1) is None


async def test_unknown_id_is_not_found_and_not_cached(
    manager: tuple[PoolManager, DictResolver],
) -> None:
    mgr, resolver = manager
    results = await asyncio.gather(*(mgr.get(4242) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ConnectionNotFound) for r in results)
    assert resolver.calls == 1 and mgr.pools() == []
    with pytest.raises(ConnectionNotFound):
        await mgr.get(4242)
    assert resolver.calls == 2


async def test_invalidate_lets_in_flight_work_finish_then_disposes(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config()
    resolver.configs[config.id] = config
    old = await mgr.get(config.id)
    async with old.connection() as conn:
        resolver.configs[config.id] = replace(config, config_version=2)
        await mgr.invalidate(config.id)
        new = await mgr.get(config.id)
        assert new is not old and new.config.config_version == 2
        assert await scalar(conn, "SELECT 1") == 1  # the in-flight request finishes on old
        await asyncio.sleep(0.1)
        assert old.checked_out == 1  # not cut short
    async with new.connection() as conn2:
        assert await scalar(conn2, "SELECT 2") == 2
    # Same database, so count both: old's connection goes, new's one stays.
    assert await wait_for_count(target, config, 1) == 1
    assert old.snapshot().open == 0 and new.snapshot().open == 1


async def test_rebuild_counts_recreations_and_sync_versions_invalidates(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config()
    resolver.configs[config.id] = config
    first = await mgr.get(config.id)
    await mgr.rebuild(config.id)
    second = await mgr.get(config.id)
    assert second is not first and second.snapshot().stats.recreations == 1
    await mgr.sync_versions()
    assert await mgr.get(config.id) is second  # unchanged version: kept
    resolver.configs[config.id] = replace(config, config_version=5)
    await mgr.sync_versions()
    third = await mgr.get(config.id)
    assert third is not second and third.config.config_version == 5
    del resolver.configs[config.id]
    await mgr.sync_versions()
    assert mgr.pools() == []


async def test_evict_and_aclose_leave_nothing_open(
    target: Target, manager: tuple[PoolManager, DictResolver]
) -> None:
    mgr, resolver = manager
    config = target.config()
    resolver.configs[config.id] = config
    pool = await mgr.get(config.id)
    async with pool.connection() as conn:
        assert await scalar(conn, "SELECT 1") == 1
    assert await target.count(config) == 1
    await mgr.evict(config.id)
    assert mgr.pools() == [] and await wait_for_count(target, config, 0) == 0
    pool = await mgr.get(config.id)
    async with pool.connection(), pool.connection():
        assert await target.count(config) == 2
    await mgr.aclose()
    assert await wait_for_count(target, config, 0) == 0
