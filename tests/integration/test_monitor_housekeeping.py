"""The housekeeper on shortened periods against the real databases: idle pools evicted, idle
connections trimmed to the minimum, killed backends healed, one status line per round."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.logs import TextFormatter
from tests.support import dbs
from tests.support.monitor import (
    PASSWORD,
    burst,
    eventually,
    maria_config,
    maria_user,
    monitor_settings,
    monitored,
    my_count,
    pg_config,
    pg_count,
    unique_id,
)

__all__ = ["maria_user"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]


def series_of(samples: list[tuple[str, dict[str, str], float]], cid: int) -> list[str]:
    return [name for name, labels, _ in samples if labels.get("connection_id") == str(cid)]


async def test_idle_pool_is_evicted_with_its_connections_and_series(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="app.pools.housekeeper")
    settings = monitor_settings(pool_idle_ttl_seconds=3, health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(pg_config(min_connections=1))
        keep = monitor.register(pg_config())
        await burst(monitor, cid, "SELECT pg_sleep(0.1)", 3)
        assert await pg_count(cid) == 3
        assert series_of(await monitor.metric_samples(), cid)
        loop = asyncio.get_running_loop()
        used_at = loop.time()

        async def gone() -> tuple[bool, int]:
            await monitor.run(keep, "SELECT 1")  # a pool in use is never evicted
            return await monitor.entry(cid) is None, await pg_count(cid)

        await eventually(gone, lambda result: result == (True, 0), within=7)
        assert loop.time() - used_at >= 2.5  # not before its TTL (3 s, minus slack)
        assert series_of(await monitor.metric_samples(), cid) == []
        assert [p["connectionId"] for p in (await monitor.status())["pools"]] == [keep]
        rendered = "\n".join(TextFormatter().format(r) for r in caplog.records)
        assert f"idle pool evicted connection_id={cid} idle_seconds=" in rendered
        assert "pools total=1 active=" in rendered

        # Evicted is not gone for good: the next request builds a fresh pool.
        assert await monitor.run(cid, "SELECT 2") == 2
        assert (await monitor.entry(cid)) is not None


@pytest.mark.parametrize("engine", ["postgresql", "mariadb"])
async def test_idle_connections_are_trimmed_to_the_minimum(engine: str) -> None:
    settings = monitor_settings(connection_idle_timeout_seconds=2, health_check_interval_seconds=1)
    user = f"dbpmon{unique_id()}"
    if engine == "mariadb":
        dbs.create_mysql_user(user, PASSWORD)
    try:
        async with monitored(settings) as monitor:
            if engine == "mariadb":
                cid = monitor.register(maria_config(user, min_connections=1, max_connections=5))
                sleep_sql = "SELECT SLEEP(0.3)"

                async def db_count() -> int:
                    return await my_count(user)
            else:
                cid = monitor.register(pg_config(min_connections=1, max_connections=5))
                sleep_sql = "SELECT pg_sleep(0.3)"

                async def db_count() -> int:
                    return await pg_count(cid)

            await burst(monitor, cid, sleep_sql, 5)
            assert await db_count() == 5
            await eventually(db_count, lambda n: n == 1, within=6)
            entry = await monitor.entry(cid)
            assert entry is not None
            assert entry["openConnections"] == 1
            await asyncio.sleep(1.5)  # a round or more later: the minimum is kept, not trimmed
            assert await db_count() == 1
    finally:
        if engine == "mariadb":
            dbs.drop_mysql_user(user)


async def test_min_connections_are_opened_by_the_housekeeper(maria_user: str) -> None:
    settings = monitor_settings(health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(maria_config(maria_user, min_connections=2))
        assert await monitor.run(cid, "SELECT 1") == 1
        await eventually(lambda: my_count(maria_user), lambda n: n == 2, within=5)


async def kill_backends(cid: int) -> int:
    admin = await dbs.pg_admin()
    try:
        killed: int = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = $1",
            f"dbpool:{cid}",
        )
        return killed
    finally:
        await admin.close()


async def test_killed_backends_are_healed_within_three_rounds() -> None:
    settings = monitor_settings(health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(pg_config(min_connections=2, max_connections=3))
        await burst(monitor, cid, "SELECT pg_sleep(0.1)", 3)
        assert await kill_backends(cid) == 3
        rounds = monitor.housekeeper.rounds

        async def healed() -> bool:
            entry = await monitor.entry(cid)
            return (
                entry is not None
                and monitor.housekeeper.rounds > rounds
                and (entry["state"], entry["healthy"]) == ("ok", True)
                and entry["lastHealthCheckAt"] is not None
            )

        await eventually(healed, bool, within=3 * 1.1 + 1)
        assert await monitor.run(cid, "SELECT 41 + 1") == 42


async def test_open_count_matches_the_database_after_backends_are_killed() -> None:
    settings = monitor_settings(health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(pg_config(min_connections=2, max_connections=3))
        await burst(monitor, cid, "SELECT pg_sleep(0.1)", 3)
        assert await kill_backends(cid) == 3

        async def open_vs_db() -> tuple[int, int]:
            entry = await monitor.entry(cid)
            assert entry is not None
            return entry["openConnections"], await pg_count(cid)

        # Within 3 rounds the pool must neither claim dead connections nor miss its minimum.
        await eventually(open_vs_db, lambda pair: pair[0] == pair[1] >= 2, within=3 * 1.1 + 1)
