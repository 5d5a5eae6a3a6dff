"""Throwaway registry databases: a fresh SQLite file, or ``CREATE DATABASE
dbpool_reg_<random>`` on the local PostgreSQL, removed afterwards."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dbs import PG_HOST, PG_PORT, PG_USER, pg_admin

KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


async def pg_execute(sql: str) -> None:
    conn = await pg_admin()
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def throwaway_registry(kind: str, directory: Path) -> Iterator[str]:
    """The URL of a brand-new, empty registry database, removed afterwards."""
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{directory / f'registry-{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    name = f"dbpool_reg_{uuid.uuid4().hex[:12]}"
    asyncio.run(pg_execute(f"CREATE DATABASE {name} OWNER {PG_USER}"))
    try:
        yield f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        asyncio.run(pg_execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
