"""``GET /pool-status/history`` through the app on a real PostgreSQL pool: auth, shape,
filters, the OpenAPI entry, and that a pool's history goes with the pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.registry.migrations import upgrade_to_head
from tests.support.api import ADMIN, BASE, QUERY, connection_body, make_settings, running_app

pytestmark = pytest.mark.postgresql

HISTORY = f"{BASE}/pool-status/history"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'registry.sqlite3'}"
    await upgrade_to_head(url)
    async with running_app(make_settings(url, history_interval_seconds=0.2,
                                         history_window_seconds=60)) as client:
        yield client


async def samples_of(client: httpx.AsyncClient, cid: int, at_least: int) -> dict[str, Any]:
    for _ in range(100):
        response = await client.get(HISTORY, params={"connectionId": cid}, headers=QUERY)
        assert response.status_code == 200, response.text
        pools = response.json()["data"]["pools"]
        if pools and len(pools[0]["samples"]["at"]) >= at_least:
            return dict(pools[0])
        await asyncio.sleep(0.1)
    raise AssertionError(f"fewer than {at_least} samples of pool {cid}")


async def test_history_of_a_live_pool(client: httpx.AsyncClient) -> None:
    assert (await client.get(HISTORY)).status_code == 401
    created = await client.post(BASE, json=connection_body(), headers=ADMIN)
    cid = created.json()["data"]["id"]
    for _ in range(5):
        ok = await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1"}, headers=QUERY)
        assert ok.status_code == 200
    pool = await samples_of(client, cid, 3)
    assert pool["connectionName"] == created.json()["data"]["name"]
    assert pool["dbType"] == "postgresql"
    s = pool["samples"]
    assert set(s) == {"at", "open", "active", "idle", "waiting", "max", "waitP99Ms",
                      "queriesPerSecond", "errorsPerSecond"}
    assert len({len(column) for column in s.values()}) == 1, "columns of unequal length"
    assert s["at"] == sorted(s["at"]) and all(isinstance(t, int) for t in s["at"])
    assert s["max"][-1] == 10 and s["open"][-1] == s["active"][-1] + s["idle"][-1] >= 1
    assert s["queriesPerSecond"][0] is None  # a pool's first sample has no interval yet
    assert all(q is not None and q >= 0 for q in s["queriesPerSecond"][1:])

    body = (await client.get(HISTORY, headers=QUERY)).json()
    assert body["success"] is True and body["data"]["intervalSeconds"] == 0.2
    assert body["data"]["windowSeconds"] == 60 and body["data"]["memoryBytes"] > 0
    recent = (await client.get(HISTORY, params={"seconds": 0.3}, headers=QUERY)).json()
    assert 1 <= len(recent["data"]["pools"][0]["samples"]["at"]) < len(s["at"]) + 3
    bad = await client.get(HISTORY, params={"connectionId": 0}, headers=QUERY)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "VALIDATION_ERROR"

    # The pool goes (deleted): its history goes at the next sample.
    assert (await client.delete(f"{BASE}/{cid}", headers=ADMIN)).status_code in (200, 204)
    for _ in range(50):
        gone = (await client.get(HISTORY, params={"connectionId": cid}, headers=QUERY)).json()
        if not gone["data"]["pools"]:
            break
        await asyncio.sleep(0.1)
    assert gone["data"]["pools"] == []


async def test_history_is_documented(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][HISTORY]["get"]
    assert {p["name"] for p in operation["parameters"]} == {"connectionId", "seconds"}
    schemas = spec["components"]["schemas"]
    assert {"intervalSeconds", "windowSeconds", "memoryBytes", "pools"} <= set(
        schemas["PoolHistoryList"]["properties"])
    assert "waitP99Ms" in schemas["HistorySamples"]["properties"]
    assert "/dashboard" not in spec["paths"]
