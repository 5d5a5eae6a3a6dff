"""200 concurrent acquisitions on a pool of 5: the database never sees more than 5."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from app.errors import PoolExhausted
from app.pools.managed_pool import ManagedPool
from app.settings import Settings
from tests.integration.test_pool_basics import Target, make_target, scalar

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb, pytest.mark.slow]


@pytest.fixture(params=["postgresql", "mysql", "mariadb"])
def capped_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    # MAX_USER_CONNECTIONS = 5: any sixth connection would fail loudly on the server.
    yield from make_target(request.param, max_user_connections=5)


async def test_two_hundred_tasks_never_exceed_five(capped_target: Target) -> None:
    target = capped_target
    config = target.config(max_connections=5, connection_timeout=10)
    pool = ManagedPool(config, Settings(max_waiting_per_pool=100))
    # Long enough (21 rounds of 5) for the sampler to see the database several times.
    sleep = "SELECT pg_sleep(0.02)" if target.is_pg else "SELECT SLEEP(0.02)"
    outcomes: list[str] = []
    samples: list[int] = []
    done = asyncio.Event()

    async def task() -> None:
        try:
            async with pool.connection() as conn:
                assert pool.checked_out <= 5
                await scalar(conn, sleep)
            outcomes.append("ok")
        except PoolExhausted:
            outcomes.append("exhausted")

    async def sample() -> None:
        while not done.is_set():
            samples.append(await target.count(config))
            await asyncio.sleep(0.01)

    sampler = asyncio.create_task(sample())
    try:
        await asyncio.wait_for(asyncio.gather(*(task() for _ in range(200))), 60)
    finally:
        done.set()
        await sampler
    try:
        assert len(outcomes) == 200
        assert outcomes.count("ok") >= 100  # the first 5 + 100 queued are always served
        assert "exhausted" in outcomes  # the 106th and later found the queue full
        assert len(samples) >= 3 and max(samples) <= 5
        snap = pool.snapshot()
        assert (snap.checked_out, snap.waiting) == (0, 0)
        assert snap.open == await target.count(config) == 5
        assert snap.stats.acquisitions == outcomes.count("ok")
        assert snap.stats.acquire_timeouts == outcomes.count("exhausted")
    finally:
        await pool.aclose(2.0)
