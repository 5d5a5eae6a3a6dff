"""Pool status and /metrics against what PostgreSQL and MariaDB themselves count."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.domain import ConnectionConfig
from tests.support import dbs
from tests.support.monitor import (
    BASE,
    PASSWORD,
    Monitor,
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

pytestmark = pytest.mark.postgresql

ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def monitor(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Monitor]:
    caplog.set_level(logging.DEBUG)
    async with monitored(monitor_settings()) as running:
        yield running
    assert PASSWORD not in caplog.text  # no line at any level carries a registered password


def used_idle(samples: list[tuple[str, dict[str, str], float]], cid: int) -> dict[str, float]:
    return {
        labels["state"]: value
        for name, labels, value in samples
        if name == "db_client_connection_count" and labels["connection_id"] == str(cid)
    }


async def test_open_connections_match_pg_stat_activity_after_a_burst(monitor: Monitor) -> None:
    cid = monitor.register(pg_config(max_connections=5))
    await burst(monitor, cid, "SELECT pg_sleep(0.3)", 5)

    entry = await monitor.entry(cid)
    assert entry is not None
    assert entry["openConnections"] == await pg_count(cid) == 5
    assert entry["activeConnections"] == 0
    assert entry["idleConnections"] == 5
    assert entry["stats"]["acquisitions"] == 5
    samples = await monitor.metric_samples()
    assert used_idle(samples, cid) == {"used": 0, "idle": 5}


async def test_open_connections_match_the_processlist_after_a_burst(
    monitor: Monitor, maria_user: str
) -> None:
    cid = monitor.register(maria_config(maria_user, max_connections=4))
    await burst(monitor, cid, "SELECT SLEEP(0.3)", 6)

    entry = await monitor.entry(cid)
    assert entry is not None
    assert entry["dbType"] == "mariadb"
    assert entry["openConnections"] == await my_count(maria_user) == 4
    samples = await monitor.metric_samples()
    idle_used = used_idle(samples, cid)
    assert idle_used["used"] + idle_used["idle"] == entry["openConnections"]


def _active_waiting(pool: dict[str, Any]) -> tuple[int, int]:
    return pool["activeConnections"], pool["waitingRequests"]


async def test_active_and_waiting_while_queries_block(monitor: Monitor) -> None:
    cid = monitor.register(pg_config(max_connections=2, connection_timeout=20.0))
    key = unique_id()
    # Advisory locks are per database: hold it in the pool's database, outside the pool.
    admin = await asyncpg.connect(
        host=dbs.PG_HOST, port=dbs.PG_PORT, user="postgres", database=dbs.PG_DATABASE
    )
    try:
        await admin.execute("SELECT pg_advisory_lock($1)", key)
        # Transaction-scoped: each blocked statement's lock ends with its connection's rollback.
        blocked = [
            asyncio.create_task(monitor.run(cid, f"SELECT pg_advisory_xact_lock({key})"))
            for _ in range(3)
        ]
        try:
            data = await eventually(
                monitor.status,
                lambda d: bool(d["pools"]) and _active_waiting(d["pools"][0]) == (2, 1),
                within=10,
            )
            pool = data["pools"][0]
            assert (data["totalPools"], data["activePools"]) == (1, 1)
            assert pool["activeConnections"] == 2
            assert pool["openConnections"] == await pg_count(cid) == 2
            waiting_on_lock = await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = $1 AND wait_event_type = 'Lock'",
                f"dbpool:{cid}",
            )
            assert waiting_on_lock == 2
            samples = await monitor.metric_samples()
            assert used_idle(samples, cid) == {"used": 2, "idle": 0}
            pending = [v for n, lb, v in samples if n == "db_client_connection_pending_requests"]
            assert pending == [1]
        finally:
            await admin.execute("SELECT pg_advisory_unlock($1)", key)
        async with asyncio.timeout(10):
            await asyncio.gather(*blocked)
    finally:
        await admin.close()

    data = await monitor.status()
    assert data["activePools"] == 0
    assert data["pools"][0]["activeConnections"] == data["pools"][0]["waitingRequests"] == 0


async def test_status_shape_and_single_pool_endpoint(monitor: Monitor) -> None:
    cid = monitor.register(pg_config(max_connections=3, min_connections=0))
    assert (await monitor.status()) == {"totalPools": 0, "activePools": 0, "pools": []}
    assert await monitor.entry(cid) is None  # registered, but no live pool yet
    response = await monitor.client.get(f"{BASE}/{cid}/pool-status")
    assert response.json()["message"] == f"connection {cid} has no live pool"

    assert await monitor.run(cid, "SELECT 1") == 1
    data = await monitor.status()
    assert (data["totalPools"], data["activePools"]) == (1, 0)
    pool = data["pools"][0]
    assert set(pool) == {
        "connectionId", "connectionName", "dbType", "activeConnections", "idleConnections",
        "openConnections", "maxConnections", "minConnections", "waitingRequests", "state",
        "healthy", "lastHealthCheckAt", "nextProbeAt", "lastProbeError", "createdAt",
        "lastUsedAt", "idleSeconds", "stats", "nodes",
    }  # fmt: skip
    assert pool["nodes"] is None  # a single-node registration
    assert set(pool["stats"]) == {
        "acquisitions", "acquireTimeouts", "queryErrors", "connectErrors", "recreations",
        "avgAcquireMs",
    }  # fmt: skip
    assert (pool["nextProbeAt"], pool["lastProbeError"]) == (None, None)
    assert pool["connectionId"] == cid
    assert pool["connectionName"] == f"monitor-{cid}"
    assert (pool["maxConnections"], pool["minConnections"]) == (3, 0)
    assert (pool["state"], pool["healthy"]) == ("ok", True)
    assert pool["lastHealthCheckAt"] is None
    assert ISO_MILLIS_Z.match(pool["createdAt"]) and ISO_MILLIS_Z.match(pool["lastUsedAt"])
    assert isinstance(pool["idleSeconds"], int)
    assert await monitor.entry(cid) == pool


async def test_unknown_id_is_404_and_bad_id_is_422(monitor: Monitor) -> None:
    response = await monitor.client.get(f"{BASE}/{unique_id()}/pool-status")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "CONNECTION_NOT_FOUND"
    response = await monitor.client.get(f"{BASE}/abc/pool-status")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"


async def test_metrics_parse_and_carry_no_host_or_user(monitor: Monitor) -> None:
    config: ConnectionConfig = pg_config(max_connections=3, min_connections=1)
    cid = monitor.register(config)
    await burst(monitor, cid, "SELECT pg_sleep(0.2)", 3)

    samples = await monitor.metric_samples()
    mine = {name: value for name, labels, value in samples
            if labels.get("connection_id") == str(cid) and "state" not in labels}  # fmt: skip
    assert mine["db_client_connection_max"] == 3
    assert mine["db_client_connection_idle_min"] == 1
    assert mine["db_client_connection_pending_requests"] == 0
    assert mine["db_client_connection_timeouts_total"] == 0
    assert mine["dbpool_circuit_open"] == 0
    entry: dict[str, Any] | None = await monitor.entry(cid)
    assert entry is not None
    assert sum(used_idle(samples, cid).values()) == entry["openConnections"] == await pg_count(cid)
    assert [v for n, _, v in samples if n == "dbpool_pools"] == [1]
    for _, labels, _ in samples:
        if "connection_id" in labels:
            assert labels["pool_name"] == f"dbpool:{labels['connection_id']}"
        assert not set(labels.values()) & {dbs.PG_HOST, dbs.PG_USER, PASSWORD}
