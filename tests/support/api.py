"""Shared helpers of the API tests (no tests here): registries on SQLite and on a throwaway
PostgreSQL database, and a running app with an httpx client, lifespan included."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from app.main import create_app
from app.registry.crypto import generate_key
from app.registry.migrations import upgrade_to_head
from app.settings import Settings
from tests.support import dbs

API_KEY = "query-key-0123456789abcdef"
ADMIN_KEY = "admin-key-0123456789abcdef"
PASSWORD = "pw-Very-Secret-7f3a9c"  # distinctive, so a leak is found by substring search
BASE = "/api/external-db-connections"

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
QUERY = {"Authorization": f"Bearer {API_KEY}"}


def unique_name(prefix: str = "api") -> str:
    return f"{prefix}-{random.randint(100000, 999999)}"


def connection_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": unique_name(),
        "dbType": "postgresql",
        "host": "127.0.0.1",
        "database": dbs.PG_DATABASE,
        "username": dbs.PG_USER,
        "password": PASSWORD,
    }
    body.update(overrides)
    return body


async def _create_pg_database(name: str) -> None:
    conn = await dbs.pg_admin()
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _raise_pg_id_floor(database: str, floor: int) -> None:
    conn = await asyncpg.connect(
        host=dbs.PG_HOST, port=dbs.PG_PORT, user="postgres", database=database
    )
    try:
        await conn.execute(f"ALTER SEQUENCE external_db_connections_id_seq RESTART WITH {floor}")
    finally:
        await conn.close()


def _raise_sqlite_id_floor(path: Path, floor: int) -> None:
    # Without AUTOINCREMENT SQLite hands out max(id) + 1: an inactive placeholder row at the
    # floor makes every later id unique enough that its pool's application_name is ours alone.
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(
            "INSERT INTO external_db_connections (id, name, db_type, host, port, database,"
            " username, password_encrypted, is_active) VALUES"
            " (?, 'id-floor-placeholder', 'postgresql', '127.0.0.1', 5432, 'x', 'x', 'x', 0)",
            (floor,),
        )
        conn.commit()


async def _drop_pg_database(name: str) -> None:
    conn = await dbs.pg_admin()
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _id_floor() -> int:
    """Registrations get ids from here up: pools are named ``dbpool:<id>`` in PostgreSQL,
    and ids shared with other tests' registries would mix up the connection counts."""
    return random.randint(100000, 899999)


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def registry_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated registry, once per backend per session (tests use unique names)."""
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("registry") / "registry.sqlite3"
        url = f"sqlite+aiosqlite:///{path}"
        asyncio.run(upgrade_to_head(url))
        _raise_sqlite_id_floor(path, _id_floor())
        yield url
        return
    name = f"dbpool_api_{random.randint(100000, 999999)}"
    asyncio.run(_create_pg_database(name))
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        asyncio.run(upgrade_to_head(url))
        asyncio.run(_raise_pg_id_floor(name, _id_floor()))
        yield url
    finally:
        asyncio.run(_drop_pg_database(name))


def make_settings(registry_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "registry_url": registry_url,
        "encryption_keys": generate_key(),
        "api_key": API_KEY,
        "admin_api_key": ADMIN_KEY,
    }
    values.update(overrides)
    return Settings(**values)


@asynccontextmanager
async def running_app(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan entered, and a client that talks to it in-process."""
    app = create_app(settings, configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error envelope with ``status``/``code`` and the request id."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False, body
    assert body["error"]["code"] == code, body
    assert set(body["error"]) == {"code", "message", "details"}, body
    assert "detail" not in body
    assert body["requestId"] == response.headers["X-Request-ID"]
    return body
