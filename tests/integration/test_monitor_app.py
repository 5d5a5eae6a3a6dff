"""The monitor inside the real app (``create_app``): registry, auth, query route and the
pool-status / metrics routes together, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.main import create_app
from app.pools.housekeeper import Housekeeper
from app.registry.crypto import generate_key
from app.registry.migrations import upgrade_to_head
from app.settings import Settings
from tests.support import dbs
from tests.support.monitor import BASE, PASSWORD, eventually, pg_count, unique_id

pytestmark = pytest.mark.postgresql

API_KEY = "monitor-query-key-0123456789"
ADMIN_KEY = "monitor-admin-key-0123456789"
QUERY = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("monitor-registry") / "registry.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(upgrade_to_head(url))
    _start_ids_at_random(path)
    return url


def _start_ids_at_random(path: Path) -> None:
    """Registered ids name the pools (``dbpool:<id>``) that the databases count, and other
    suites run against the same servers: start this registry's ids at a random base."""
    base = unique_id() * 10  # 1 000 000+: clear of other suites' small and random ids
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO external_db_connections (id, name, db_type, host, port, database,"
            " username, password_encrypted, is_active, created_at, updated_at)"
            " VALUES (?, 'id-base-placeholder', 'postgresql', '127.0.0.1', 1, 'none', 'none',"
            " 'none', 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')",
            (base,),
        )


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app with its lifespan entered; a housekeeper is started here only if main did not
    start one (``app.state.housekeeper``)."""
    app = create_app(settings, configure_logs=False)
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(app.router.lifespan_context(app))
        if getattr(app.state, "housekeeper", None) is None:
            metrics = getattr(app.state, "pool_metrics", None)
            keeper = Housekeeper(app.state.parts.pools, settings, metrics=metrics)
            keeper.start()
            stack.push_async_callback(keeper.aclose)
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)
        )
        yield app, client


def settings_for(registry_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "registry_url": registry_url,
        "encryption_keys": generate_key(),
        "api_key": API_KEY,
        "admin_api_key": ADMIN_KEY,
        "health_check_interval_seconds": 1,
        "pool_idle_ttl_seconds": 600,
    }
    values.update(overrides)
    return Settings(**values)


async def register(client: httpx.AsyncClient, **overrides: Any) -> int:
    body = {
        "name": f"monitor-app-{unique_id()}", "dbType": "postgresql", "host": dbs.PG_HOST,
        "port": dbs.PG_PORT, "database": dbs.PG_DATABASE, "username": dbs.PG_USER,
        "password": PASSWORD, "maxConnections": 4, **overrides,
    }  # fmt: skip
    response = await client.post(BASE, json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    connection_id: int = response.json()["data"]["id"]
    return connection_id


async def query(client: httpx.AsyncClient, cid: int, sql: str) -> httpx.Response:
    return await client.post(f"{BASE}/{cid}/query", json={"sql": sql}, headers=QUERY)


def samples_of(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


async def test_status_and_metrics_through_the_app(
    registry_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_app(settings_for(registry_url)) as (_, client):
        cid = await register(client)
        seen: list[str] = []

        # Unknown id -> 404 envelope; known but never used -> data null.
        response = await client.get(f"{BASE}/{unique_id()}/pool-status", headers=QUERY)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "CONNECTION_NOT_FOUND"
        response = await client.get(f"{BASE}/{cid}/pool-status", headers=QUERY)
        assert response.status_code == 200 and response.json()["data"] is None

        responses = await asyncio.gather(
            *(query(client, cid, "SELECT pg_sleep(0.2) AS slept") for _ in range(4))
        )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]

        # The static path is not taken for an id by the connections router.
        response = await client.get(f"{BASE}/pool-status", headers=QUERY)
        seen.append(response.text)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["success"] is True and body["message"].endswith("connection pools")
        entry = next(p for p in body["data"]["pools"] if p["connectionId"] == cid)
        assert entry["openConnections"] == await pg_count(cid) == 4
        assert entry["stats"]["acquisitions"] >= 4

        response = await client.get("/metrics", headers=QUERY)
        seen.append(response.text)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        mine = [
            (labels["state"], value)
            for name, labels, value in samples_of(response.text)
            if name == "db_client_connection_count" and labels["connection_id"] == str(cid)
        ]
        assert sum(value for _, value in mine) == entry["openConnections"]

        # DELETE closes the pool: it leaves the status and, within a round, /metrics.
        response = await client.delete(f"{BASE}/{cid}", headers=ADMIN)
        assert response.status_code == 200, response.text

        async def series_left() -> int:
            text = (await client.get("/metrics", headers=QUERY)).text
            return sum(1 for _, lb, _ in samples_of(text) if lb.get("connection_id") == str(cid))

        await eventually(series_left, lambda n: n == 0, within=5)
        status = (await client.get(f"{BASE}/pool-status", headers=QUERY)).json()["data"]
        assert cid not in [p["connectionId"] for p in status["pools"]]
    assert not [text for text in seen if PASSWORD in text]
    assert PASSWORD not in caplog.text


async def test_monitor_routes_need_a_key_when_auth_is_on(registry_url: str) -> None:
    async with running_app(settings_for(registry_url)) as (_, client):
        for path in (f"{BASE}/pool-status", f"{BASE}/1/pool-status", "/metrics"):
            response = await client.get(path)
            assert response.status_code == 401, (path, response.text)
            assert response.json()["error"]["code"] == "UNAUTHORIZED"
            response = await client.get(path, headers={"Authorization": "Bearer wrong-key-xyz"})
            assert response.status_code == 401, path
        for headers in (QUERY, ADMIN):
            assert (await client.get(f"{BASE}/pool-status", headers=headers)).status_code == 200
            assert (await client.get("/metrics", headers=headers)).status_code == 200
