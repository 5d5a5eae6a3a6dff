"""pool-status tells the truth about connect failures: refused credentials are a state of
their own (`auth_failed`) probed on a slow cadence, `healthy` agrees with `state`, a pool that
never connected is not healthy, and connect failures are counted (not as query errors)."""

from __future__ import annotations

import asyncio
import socket
from datetime import UTC, datetime
from typing import Any

import pytest

from app.errors import DbAuthFailed, DbUnavailable
from tests.support import dbs
from tests.support.monitor import (
    Monitor,
    maria_config,
    maria_user,
    monitor_settings,
    monitored,
    my_count,
    pg_config,
)

pytestmark = [pytest.mark.slow]

__all__ = ["maria_user"]  # the fixture, re-exported for pytest

WRONG = "pw-Not-The-One-5b2c91"


def set_password(user: str, password: str) -> None:
    conn = dbs.my_admin()
    try:
        with conn.cursor() as cur:
            for host in ("%", "localhost"):
                cur.execute(f"ALTER USER '{user}'@'{host.replace('%', '%%')}' IDENTIFIED BY %s",
                            (password,))
    finally:
        conn.close()


async def refused_four_times(monitor: Monitor, cid: int) -> None:
    for _ in range(4):
        with pytest.raises(DbAuthFailed):
            await monitor.run(cid, "SELECT 1")


def seconds_ahead(stamp: str) -> float:
    due = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (due - datetime.now(UTC)).total_seconds()


@pytest.mark.mariadb
async def test_refused_credentials_are_auth_failed_not_healthy(maria_user: str) -> None:
    settings = monitor_settings(health_check_interval_seconds=0.5)
    async with monitored(settings) as monitor:
        cid = monitor.register(maria_config(maria_user, WRONG, connection_timeout=2))
        await refused_four_times(monitor, cid)
        await asyncio.sleep(1.2)  # two monitor rounds
        entry: Any = await monitor.entry(cid)
        assert (entry["state"], entry["healthy"]) == ("auth_failed", False)
        assert entry["lastHealthCheckAt"] is not None
        assert entry["lastProbeError"] == "DB_AUTH_FAILED"
        assert 20 <= seconds_ahead(entry["nextProbeAt"]) <= 30  # the slow cadence, jittered
        assert (entry["stats"]["connectErrors"], entry["stats"]["queryErrors"]) == (3, 0)
        assert entry["openConnections"] == await my_count(maria_user) == 0
        samples = await monitor.metric_samples()
        mine = {n: v for n, lb, v in samples if lb.get("connection_id") == str(cid)}
        assert (mine["dbpool_circuit_open"], mine["dbpool_connect_errors_total"]) == (1, 3)


@pytest.mark.mariadb
async def test_fixed_credentials_close_the_circuit_without_a_request(maria_user: str) -> None:
    settings = monitor_settings(auth_retry_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(maria_config(maria_user, WRONG, connection_timeout=2))
        await refused_four_times(monitor, cid)
        await asyncio.to_thread(set_password, maria_user, WRONG)  # the DBA fixes the account
        async with asyncio.timeout(3):
            while (entry := await monitor.entry(cid)) is None or entry["state"] != "ok":
                await asyncio.sleep(0.05)
        assert (entry["healthy"], entry["lastProbeError"], entry["nextProbeAt"]) == (
            True, None, None
        )
        assert await monitor.run(cid, "SELECT 1") == 1
        assert entry["openConnections"] <= await my_count(maria_user) <= 1


@pytest.mark.postgresql
async def test_a_pool_that_never_connected_is_not_healthy() -> None:
    async with monitored(monitor_settings()) as monitor:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
            cid = monitor.register(pg_config(port=sock.getsockname()[1], connection_timeout=1))
            with pytest.raises(DbUnavailable):
                await monitor.run(cid, "SELECT 1")
            entry: Any = await monitor.entry(cid)
        assert (entry["state"], entry["healthy"]) == ("degraded", False)
        assert (entry["lastProbeError"], entry["nextProbeAt"]) == ("DB_UNAVAILABLE", None)
        assert entry["stats"]["connectErrors"] == 1 and entry["openConnections"] == 0
