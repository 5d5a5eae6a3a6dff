"""The registry migration on real SQLite files and real PostgreSQL databases."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from app.registry import (
    Base,
    create_registry_engine,
    downgrade,
    schema_is_at_head,
    upgrade_to_head,
)
from app.registry.migrations import MIGRATION_LOCK_KEY, alembic_directory, lock_file_for
from tests.support.dbs import PG_HOST, PG_PORT, PG_USER
from tests.support.registry import KINDS, throwaway_registry

TABLE = "external_db_connections"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=KINDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with throwaway_registry(request.param, tmp_path) as url:
        yield url


@contextlib.asynccontextmanager
async def _engine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_registry_engine(url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def _tables(url: str) -> set[str]:
    async with _engine(url) as engine, engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def _versions(url: str) -> list[str]:
    async with _engine(url) as engine, engine.connect() as conn:
        return list(await conn.scalars(text("SELECT version_num FROM alembic_version")))


async def test_upgrade_then_downgrade(empty_url: str) -> None:
    async with _engine(empty_url) as engine:
        assert await schema_is_at_head(engine) is False
        await upgrade_to_head(empty_url)
        assert await schema_is_at_head(engine) is True
    assert TABLE in await _tables(empty_url)
    assert await _versions(empty_url) == ["0002_replicas"]

    await upgrade_to_head(empty_url)  # already at head: a no-op
    assert await _versions(empty_url) == ["0002_replicas"]

    await downgrade(empty_url)
    assert TABLE not in await _tables(empty_url)
    assert await _versions(empty_url) == []
    async with _engine(empty_url) as engine:
        assert await schema_is_at_head(engine) is False


async def test_migration_matches_the_model(empty_url: str) -> None:
    await upgrade_to_head(empty_url)

    def diff(conn: Connection) -> list[object]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    async with _engine(empty_url) as engine, engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await downgrade(empty_url)


async def test_check_constraints_exist_in_the_database(empty_url: str) -> None:
    await upgrade_to_head(empty_url)
    async with _engine(empty_url) as engine, engine.connect() as conn:
        checks = await conn.run_sync(lambda c: inspect(c).get_check_constraints(TABLE))
    names = {check["name"] for check in checks}
    expected = {
        f"ck_{TABLE}_{column}"
        for column in (
            "db_type", "port", "max_connections", "min_connections",
            "connection_timeout", "query_timeout",
        )
    }  # fmt: skip
    assert expected <= names
    await downgrade(empty_url)


def _upgrade_in_subprocess(url: str) -> subprocess.Popen[str]:
    code = (
        "import asyncio, sys\n"
        "from app.registry.migrations import upgrade_to_head\n"
        "asyncio.run(upgrade_to_head(sys.argv[1]))\n"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> None:
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err


async def test_two_processes_upgrading_together_both_succeed(empty_url: str) -> None:
    procs = [_upgrade_in_subprocess(empty_url) for _ in range(2)]
    for proc in procs:
        await asyncio.to_thread(_finish, proc)
    assert TABLE in await _tables(empty_url)
    assert await _versions(empty_url) == ["0002_replicas"]
    await downgrade(empty_url)


@contextlib.asynccontextmanager
async def _hold_migration_lock(url: str) -> AsyncIterator[None]:
    """Hold the same lock ``upgrade_to_head`` takes, from outside it."""
    lock_file = lock_file_for(url)
    if lock_file is not None:
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            os.close(fd)
        return
    database = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        yield
    finally:
        await conn.close()


async def test_upgrade_waits_for_the_lock_holder(empty_url: str) -> None:
    async with _hold_migration_lock(empty_url):
        proc = _upgrade_in_subprocess(empty_url)
        await asyncio.sleep(1.5)  # ample time to migrate an empty database, if unguarded
        assert proc.poll() is None, "upgrade_to_head did not wait for the migration lock"
        assert TABLE not in await _tables(empty_url)
    await asyncio.to_thread(_finish, proc)
    assert TABLE in await _tables(empty_url)
    await downgrade(empty_url)


def test_alembic_directory_is_the_repository_one() -> None:
    assert alembic_directory() == ROOT / "alembic"
    assert (alembic_directory() / "env.py").is_file()


def test_lock_file_sits_beside_the_sqlite_database(tmp_path: Path) -> None:
    db = tmp_path / "reg.sqlite3"
    assert lock_file_for(f"sqlite+aiosqlite:///{db}") == tmp_path / "reg.sqlite3.migrate.lock"
    assert lock_file_for("sqlite+aiosqlite://") is None
    assert lock_file_for("postgresql+asyncpg://u@127.0.0.1/x") is None


async def test_a_new_sqlite_registry_locked_by_another_process_is_waited_for(
    tmp_path: Path,
) -> None:
    # Another process is writing the new file (its migration) while this one switches it to
    # WAL: SQLite refuses at once, without its busy timeout. The switch must be retried.
    path = tmp_path / "locked.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE other_process (x integer)")
    holder.execute("BEGIN IMMEDIATE")
    loop = asyncio.get_running_loop()
    loop.call_later(0.5, holder.rollback)
    engine = create_registry_engine(f"sqlite+aiosqlite:///{path}")
    try:
        started = time.monotonic()
        async with engine.connect() as conn:
            mode = await conn.scalar(text("PRAGMA journal_mode"))
        assert mode == "wal"
        assert time.monotonic() - started >= 0.4  # it did wait for the holder
    finally:
        await engine.dispose()
        holder.close()
