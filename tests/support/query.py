"""Shared helpers of the query-path tests (no tests here): a running app on a SQLite
registry, connections registered through the API for each engine, direct admin access."""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pymysql
import pytest
from fastapi import FastAPI

from app.main import create_app
from app.registry.crypto import generate_key
from app.registry.migrations import upgrade_to_head
from app.settings import Settings
from tests.support import dbs

BASE = "/api/external-db-connections"
ENGINES = ["postgresql", "mysql", "mariadb"]


def unique(prefix: str) -> str:
    return f"{prefix}_{random.randint(100000, 999999)}_{secrets.token_hex(2)}"


def connection_body(db_type: str, **overrides: Any) -> dict[str, Any]:
    pg = db_type == "postgresql"
    body: dict[str, Any] = {
        "name": unique("q"),
        "dbType": db_type,
        "host": "127.0.0.1",
        "port": dbs.PG_PORT if pg else dbs.MY_PORT,
        "database": dbs.PG_DATABASE if pg else dbs.MY_DATABASE,
        "username": dbs.PG_USER if pg else dbs.MY_USER,
        "password": dbs.PG_PASSWORD if pg else dbs.MY_PASSWORD,
        "maxConnections": 3,
        "connectionTimeout": 5,
        "queryTimeout": 20,
        "options": {"ssl": "disable"} if pg else {},
    }
    body.update(overrides)
    return body


@dataclass
class Api:
    """A running app, its client, and helpers to register connections."""

    app: FastAPI
    client: httpx.AsyncClient

    async def register(self, db_type: str, **overrides: Any) -> int:
        response = await self.client.post(BASE, json=connection_body(db_type, **overrides))
        assert response.status_code == 201, response.text
        return int(response.json()["data"]["id"])

    async def query(self, cid: int, sql: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"{BASE}/{cid}/query", json={"sql": sql, **body})

    async def rows(self, cid: int, sql: str, **body: Any) -> list[Any]:
        response = await self.query(cid, sql, **body)
        assert response.status_code == 200, response.text
        rows: list[Any] = response.json()["data"]["rows"]
        return rows

    async def transaction(self, cid: int, statements: list[dict[str, Any]],
                          **body: Any) -> httpx.Response:
        return await self.client.post(f"{BASE}/{cid}/transaction",
                                      json={"statements": statements, **body})

    def snapshot(self, cid: int) -> Any:
        return self.app.state.parts.pools.snapshot(cid)


@pytest.fixture(scope="session")
def query_registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("query-registry") / "registry.sqlite3"
    url = f"sqlite+aiosqlite:///{path}"
    asyncio.run(upgrade_to_head(url))
    return url


@asynccontextmanager
async def running_api(registry_url: str, **settings: Any) -> AsyncIterator[Api]:
    """The app with its lifespan entered (auth off), talked to in-process."""
    app = create_app(Settings(registry_url=registry_url, encryption_keys=generate_key(),
                              **settings), configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                     timeout=60) as client:
            yield Api(app, client)


@pytest.fixture
async def api(query_registry: str) -> AsyncIterator[Api]:
    async with running_api(query_registry) as running:
        yield running


# ---- the databases' own view ---------------------------------------------------------


async def pg_admin_fetch(sql: str, *args: Any) -> list[Any]:
    conn = await dbs.pg_admin()
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


def my_admin_fetch(sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
    conn = dbs.my_admin()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


async def running_statements(db_type: str, marker: str) -> int:
    """How many statements containing ``marker`` the server is executing now."""
    if db_type == "postgresql":
        rows = await pg_admin_fetch(
            "SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 "
            "AND pid <> pg_backend_pid()", f"%{marker}%")
        return len(rows)
    rows = await asyncio.to_thread(
        my_admin_fetch,
        "SELECT 1 FROM information_schema.PROCESSLIST WHERE COMMAND = 'Query' "
        "AND INFO LIKE %s AND ID <> CONNECTION_ID()", (f"%{marker}%",))
    return len(rows)


async def wait_until(predicate: Any, within: float) -> bool:
    """Poll ``predicate()`` (async) every 0.1 s for at most ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if await predicate():
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(0.1)


async def admin_exec(db_type: str, sql: str) -> list[Any]:
    """Run ``sql`` on the test database outside any pool (as the test user / root)."""
    if db_type == "postgresql":
        conn = await asyncpg.connect(host=dbs.PG_HOST, port=dbs.PG_PORT, user=dbs.PG_USER,
                                     password=dbs.PG_PASSWORD, database=dbs.PG_DATABASE)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return await asyncio.to_thread(_my_exec, sql)


def _my_exec(sql: str) -> list[Any]:
    conn = pymysql.connect(host=dbs.MY_HOST, port=dbs.MY_PORT, user="root", password="",
                           database=dbs.MY_DATABASE, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        conn.close()
