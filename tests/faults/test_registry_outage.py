"""The registry's PostgreSQL database made unreachable through a TCP proxy the test cuts:
every registry read and write answers 503 REGISTRY_UNAVAILABLE with Retry-After (one warning
line, no traceback), queries on connections whose pools exist keep working from the
configuration the pool was built with, the housekeeper neither fails nor rebuilds them,
/readyz says why it is not ready, and everything answers again once the registry is back."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from app.api.routes.health import READY_CACHE_SECONDS
from app.registry.migrations import upgrade_to_head
from tests.support import dbs
from tests.support.api import (
    ADMIN,
    BASE,
    PASSWORD,
    QUERY,
    assert_error,
    connection_body,
    make_settings,
    running_app,
)
from tests.support.proxy import TcpProxy
from tests.support.registry import pg_execute

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]


@pytest.fixture
async def registry_db() -> AsyncIterator[str]:
    name = f"dbpool_reg_{uuid.uuid4().hex[:12]}"
    await pg_execute(f"CREATE DATABASE {name} OWNER {dbs.PG_USER}")
    try:
        yield name
    finally:
        await pg_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as running:
        yield running


async def own_ids(database: str) -> None:
    """Ids no other test's registry hands out: pools are named ``dbpool:<id>`` in
    pg_stat_activity, which is how this test counts its own pool's sessions."""
    conn = await asyncpg.connect(host=dbs.PG_HOST, port=dbs.PG_PORT, user="postgres",
                                 database=database)  # fmt: skip
    try:
        floor = random.randint(100000, 899999)
        await conn.execute(f"ALTER SEQUENCE external_db_connections_id_seq RESTART WITH {floor}")
    finally:
        await conn.close()


async def register(client: httpx.AsyncClient) -> int:
    response = await client.post(BASE, json=connection_body(maxConnections=2), headers=ADMIN)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


async def query(client: httpx.AsyncClient, cid: int) -> httpx.Response:
    return await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 41 + 1 AS n"},
                             headers=QUERY)  # fmt: skip


async def test_registry_outage_is_503_and_existing_pools_keep_serving(
    registry_db: str, proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    url = f"postgresql+asyncpg://{dbs.PG_USER}@127.0.0.1:{proxy.port}/{registry_db}"
    await upgrade_to_head(url)
    await own_ids(registry_db)
    settings = make_settings(url, health_check_interval_seconds=0.5)
    async with running_app(settings) as client:
        served, unbuilt = await register(client), await register(client)
        assert (await query(client, served)).json()["data"]["rows"] == [{"n": 42}]
        before = (await client.get(f"{BASE}/{served}/pool-status", headers=QUERY)).json()
        caplog.clear()
        proxy.cut()

        calls = [
            client.get(BASE, headers=QUERY),
            client.get(f"{BASE}/{served}", headers=QUERY),
            client.post(BASE, json=connection_body(), headers=ADMIN),
            client.patch(f"{BASE}/{served}", json={"description": "x"}, headers=ADMIN),
            client.delete(f"{BASE}/{unbuilt}", headers=ADMIN),
            query(client, unbuilt),  # its pool would need the registry's configuration
            client.get(f"{BASE}/{unbuilt}/pool-status", headers=QUERY),
        ]
        for response in await asyncio.gather(*calls):
            assert_error(response, 503, "REGISTRY_UNAVAILABLE")
            assert response.headers["Retry-After"] == "5"
            assert "existing pools keep serving" in response.json()["error"]["message"]

        # The pool built before the outage serves from its own configuration, through at
        # least two housekeeping rounds that cannot read the registry's config versions.
        for _ in range(6):
            assert (await query(client, served)).json()["data"]["rows"] == [{"n": 42}]
            await asyncio.sleep(0.25)
        status = (await client.get(f"{BASE}/{served}/pool-status", headers=QUERY)).json()
        assert status["data"]["createdAt"] == before["data"]["createdAt"]  # not rebuilt
        assert status["data"]["stats"]["recreations"] == 0
        assert status["data"]["state"] == "ok"
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and "Retry-After" in ready.headers
        assert ready.json()["reason"].startswith("registry database unreachable")

        assert "Traceback" not in caplog.text
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert any("REGISTRY_UNAVAILABLE" in r.getMessage() for r in caplog.records
                   if r.levelno == logging.WARNING)  # fmt: skip

        proxy.restore()
        await asyncio.sleep(READY_CACHE_SECONDS)  # /readyz keeps its answer that long
        assert (await client.get("/readyz")).status_code == 200
        assert (await client.get(BASE, headers=QUERY)).status_code == 200
        assert (await query(client, unbuilt)).status_code == 200
        assert await dbs.pg_count(f"dbpool:{served}") <= 2
    assert PASSWORD not in caplog.text
