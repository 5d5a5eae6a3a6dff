"""Shared helpers of the monitor tests (no tests here): the real ``PoolManager`` over an
in-test resolver, the monitor's routers in a small app (with the API's error handlers), the
housekeeper on shortened periods, and readers for the status and metrics it serves.

The registry is not part of what these tests exercise, so a dict of ``ConnectionConfig``
stands in for it (pure bookkeeping, no database behaviour); every pool talks to the real
PostgreSQL / MariaDB. ``test_monitor_app.py`` covers the same routes inside ``create_app``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import text

from app.api.deps import ApiParts
from app.api.errors import install_error_handlers
from app.api.routes import metrics as metrics_routes
from app.api.routes import pools as pool_routes
from app.domain import ConnectionConfig, DbType
from app.errors import ConnectionNotFound
from app.pools.history import HistorySampler
from app.pools.housekeeper import Housekeeper
from app.pools.manager import PoolManager
from app.pools.metrics import PoolMetrics
from app.settings import Settings
from tests.support import dbs

BASE = "/api/external-db-connections"
PASSWORD = "pw-Monitor-Secret-4e1d77"  # distinctive, so a leak is found by substring search

T = TypeVar("T")


def unique_id() -> int:
    return random.randint(100000, 999999)


def monitor_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "health_check_interval_seconds": 60,
        "pool_idle_ttl_seconds": 600,
        "connection_idle_timeout_seconds": 30,
        "shutdown_grace_seconds": 2,
    }
    values.update(overrides)
    return Settings(**values)


def pg_config(**overrides: Any) -> ConnectionConfig:
    cid = unique_id()
    values: dict[str, Any] = {
        "id": cid,
        "name": f"monitor-{cid}",
        "db_type": DbType.POSTGRESQL,
        "host": dbs.PG_HOST,
        "port": dbs.PG_PORT,
        "database": dbs.PG_DATABASE,
        "username": dbs.PG_USER,
        "password": SecretStr(PASSWORD),  # PostgreSQL trusts loopback: any password connects
        "max_connections": 5,
        "connection_timeout": 5.0,
        "query_timeout": 30.0,
    }
    values.update(overrides)
    return ConnectionConfig(**values)


def maria_config(user: str, password: str = PASSWORD, **overrides: Any) -> ConnectionConfig:
    values: dict[str, Any] = {
        "db_type": DbType.MARIADB,
        "port": dbs.MY_PORT,
        "database": dbs.MY_DATABASE,
        "username": user,
        "password": SecretStr(password),
    }
    values.update(overrides)
    return pg_config(**values)


@dataclass
class DictRegistry:
    """Stands in for the registry: the resolver and the one repository call the routes make."""

    configs: dict[int, ConnectionConfig] = field(default_factory=dict)

    def add(self, config: ConnectionConfig) -> int:
        self.configs[config.id] = config
        return config.id

    async def resolve(self, connection_id: int) -> ConnectionConfig:
        return await self.get(connection_id)

    async def get(self, connection_id: int) -> ConnectionConfig:
        try:
            return self.configs[connection_id]
        except KeyError:
            raise ConnectionNotFound(f"no connection {connection_id}") from None

    async def config_versions(self) -> Mapping[int, int]:
        return {cid: c.config_version for cid, c in self.configs.items()}


@dataclass
class Monitor:
    """A running monitor: the manager, the housekeeper, a client of the monitor's routes."""

    app: FastAPI
    client: httpx.AsyncClient
    registry: DictRegistry
    manager: PoolManager
    housekeeper: Housekeeper

    def register(self, config: ConnectionConfig) -> int:
        return self.registry.add(config)

    async def run(self, connection_id: int, sql: str) -> Any:
        """One statement on one pooled connection, held the way the query path holds it."""
        pool = await self.manager.get(connection_id)
        async with pool.connection() as conn:
            return (await conn.execute(text(sql))).scalar()

    async def status(self) -> dict[str, Any]:
        response = await self.client.get(f"{BASE}/pool-status")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert body["success"] is True
        assert body["message"] == f"{body['data']['totalPools']} connection pools"
        data: dict[str, Any] = body["data"]
        return data

    async def entry(self, connection_id: int) -> dict[str, Any] | None:
        response = await self.client.get(f"{BASE}/{connection_id}/pool-status")
        assert response.status_code == 200, response.text
        data: dict[str, Any] | None = response.json()["data"]
        return data

    async def metric_samples(self) -> list[tuple[str, dict[str, str], float]]:
        response = await self.client.get("/metrics")
        assert response.status_code == 200, response.text
        return [
            (s.name, dict(s.labels), s.value)
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        ]


@asynccontextmanager
async def monitored(
    settings: Settings, *, start_housekeeper: bool = True
) -> AsyncIterator[Monitor]:
    """The monitor's parts wired as main wires them, torn down in reverse order."""
    registry = DictRegistry()
    app = FastAPI()
    install_error_handlers(app)
    app.include_router(pool_routes.router)
    app.include_router(metrics_routes.router)
    async with AsyncExitStack() as stack:
        manager = PoolManager(registry, settings)
        stack.push_async_callback(manager.aclose)
        metrics = PoolMetrics()
        metrics.watch(manager)
        keeper = Housekeeper(manager, settings, metrics=metrics)
        if start_housekeeper:
            keeper.start()
        stack.push_async_callback(keeper.aclose)
        history = HistorySampler(manager, metrics)
        app.state.parts = ApiParts(settings, registry, manager, history)  # type: ignore[arg-type]
        app.state.pool_metrics = metrics
        transport = httpx.ASGITransport(app=app)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=30)
        )
        yield Monitor(app, client, registry, manager, keeper)


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, within: float
) -> T:
    """Poll ``probe`` every 0.1 s until ``accept`` says yes; fail with the last value."""
    last: T | None = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while loop.time() < deadline:
        last = await probe()
        if accept(last):
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {within} s; last value: {last!r}")


async def pg_count(connection_id: int) -> int:
    return await dbs.pg_count(f"dbpool:{connection_id}")


async def my_count(user: str) -> int:
    return await asyncio.to_thread(dbs.my_count, user)


@pytest.fixture
def maria_user() -> Iterator[str]:
    """A throwaway MariaDB account, so a test counts only its own pool's connections."""
    name = f"dbpmon{unique_id()}"
    dbs.create_mysql_user(name, PASSWORD)
    try:
        yield name
    finally:
        dbs.drop_mysql_user(name)


async def burst(monitor: Monitor, cid: int, sql: str, n: int) -> None:
    """``n`` statements at once through the pool, bounded in time."""
    async with asyncio.timeout(20):
        await asyncio.gather(*(monitor.run(cid, sql) for _ in range(n)))
