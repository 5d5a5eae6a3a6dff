"""A PATCH or DELETE reaches the pools: the old pool's connections close (counted by
PostgreSQL itself), the next request gets a rebuilt pool, deactivation and removal stick."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.support import dbs
from tests.support.api import (
    ADMIN,
    BASE,
    QUERY,
    assert_error,
    connection_body,
)


async def _wait_for_count(application_name: str, expected: int, within: float = 10.0) -> int:
    deadline = time.monotonic() + within
    while True:
        count = await dbs.pg_count(application_name)
        if count == expected or time.monotonic() >= deadline:
            return count
        await asyncio.sleep(0.1)


async def _select_one(client: httpx.AsyncClient, cid: int) -> httpx.Response:
    return await client.post(f"{BASE}/{cid}/query", json={"sql": "SELECT 1 AS one"}, headers=QUERY)


async def _register(client: httpx.AsyncClient, **overrides: Any) -> int:
    body = connection_body(password=dbs.PG_PASSWORD, maxConnections=3, **overrides)
    response = await client.post(BASE, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


async def test_patch_rebuilds_and_delete_closes_the_pool(client: httpx.AsyncClient) -> None:
    cid = await _register(client)
    app_name = f"dbpool:{cid}"
    first = await _select_one(client, cid)
    assert first.status_code == 200, first.text
    assert await _wait_for_count(app_name, 1) == 1

    patched = await client.patch(f"{BASE}/{cid}", json={"maxConnections": 4}, headers=ADMIN)
    assert patched.status_code == 200
    assert await _wait_for_count(app_name, 0) == 0, "the old pool must be closed"

    again = await _select_one(client, cid)
    assert again.status_code == 200, again.text
    assert await _wait_for_count(app_name, 1) == 1

    deleted = await client.delete(f"{BASE}/{cid}", headers=ADMIN)
    assert deleted.status_code == 200
    assert await _wait_for_count(app_name, 0) == 0
    assert_error(await _select_one(client, cid), 404, "CONNECTION_NOT_FOUND")


async def test_deactivation_closes_the_pool_and_refuses_queries(client: httpx.AsyncClient) -> None:
    cid = await _register(client)
    app_name = f"dbpool:{cid}"
    assert (await _select_one(client, cid)).status_code == 200
    assert await _wait_for_count(app_name, 1) == 1

    off = await client.patch(f"{BASE}/{cid}", json={"isActive": False}, headers=ADMIN)
    assert off.status_code == 200 and off.json()["data"]["isActive"] is False
    assert await _wait_for_count(app_name, 0) == 0
    assert_error(await _select_one(client, cid), 409, "CONNECTION_INACTIVE")

    on = await client.patch(f"{BASE}/{cid}", json={"isActive": True}, headers=ADMIN)
    assert on.status_code == 200
    assert (await _select_one(client, cid)).status_code == 200
    await client.delete(f"{BASE}/{cid}", headers=ADMIN)
    assert await _wait_for_count(app_name, 0) == 0
