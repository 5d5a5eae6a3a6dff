"""Bring the registry schema to Alembic's head, safely from several processes at once.

The migration runs on the caller's event loop: the connection that holds the lock is
handed to ``alembic/env.py`` (``config.attributes["connection"]``), so Alembic needs no
loop or thread of its own and the lock and the DDL share one session.

Two processes starting together cannot both migrate: on PostgreSQL they take a
session-level advisory lock on a fixed key, on SQLite an exclusive ``flock`` on a file
beside the database. Waiting for either is bounded (``LOCK_TIMEOUT_SECONDS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import importlib.resources
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from alembic.command import downgrade as alembic_downgrade
from alembic.command import upgrade as alembic_upgrade
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

import app
from app.registry.db import create_registry_engine, is_sqlite

__all__ = [
    "LOCK_TIMEOUT_SECONDS",
    "MIGRATION_LOCK_KEY",
    "alembic_config",
    "alembic_directory",
    "downgrade",
    "lock_file_for",
    "schema_is_at_head",
    "upgrade_to_head",
]

logger = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 0x6462_706F_6F6C  # "dbpool" in ASCII: one fixed bigint for every process
LOCK_TIMEOUT_SECONDS = 120.0
_POLL_SECONDS = 0.1
_VERSION_TABLE = "alembic_version"  # Alembic's default

AlembicAction = Callable[[Config], None]


def alembic_directory() -> Path:
    """Our migrations: ``app/_alembic`` in an installed wheel (the build maps the repository's
    top-level ``alembic/`` there), else ``alembic/`` beside the ``app`` package in a checkout
    or an editable install. Either is recognised by its ``env.py``: in a plain install the
    folder beside ``app`` is the Alembic library itself."""
    package = Path(str(importlib.resources.files(app)))
    for candidate in (package / "_alembic", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise FileNotFoundError(
        f"the registry migrations were not found in {package / '_alembic'} (an installed "
        f"wheel) or {package.parent / 'alembic'} (a checkout); reinstall dbpool from a wheel "
        "or with pip install ."
    )


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for the registry at ``url`` (passed to env.py in attributes)."""
    config = Config()
    config.set_main_option("script_location", str(alembic_directory()))
    # attributes, not set_main_option: ConfigParser would choke on '%' in a password.
    config.attributes["url"] = url
    return config


async def upgrade_to_head(url: str) -> None:
    """Migrate the registry at ``url`` to the newest revision (a no-op when already there)."""
    await _run_locked(url, lambda config: alembic_upgrade(config, "head"))


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the registry at ``url`` down to ``revision`` (``base``: drop everything)."""
    await _run_locked(url, lambda config: alembic_downgrade(config, revision))


async def schema_is_at_head(engine: AsyncEngine) -> bool:
    """True when the registry's recorded revisions are exactly the scripts' heads.

    Raises SQLAlchemy's errors when the registry cannot be reached.
    """
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_heads)
    return current == _script_heads()


def lock_file_for(url: str) -> Path | None:
    """The ``flock`` file guarding a SQLite registry (``None``: in-memory or not SQLite)."""
    database = make_url(url).database
    if not is_sqlite(url) or not database or database == ":memory:":
        return None
    path = Path(database)
    return path.with_name(path.name + ".migrate.lock")


def _current_heads(connection: Connection) -> frozenset[str]:
    # Read alembic_version directly: MigrationContext would log at INFO on every /readyz.
    if not inspect(connection).has_table(_VERSION_TABLE):
        return frozenset()
    return frozenset(connection.scalars(text(f"SELECT version_num FROM {_VERSION_TABLE}")))


@functools.cache
def _script_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory(str(alembic_directory())).get_heads())


async def _run_locked(url: str, action: AlembicAction) -> None:
    engine = create_registry_engine(url)
    try:
        async with engine.connect() as connection, _migration_lock(connection, url):
            await connection.run_sync(_run_alembic, url, action)
            await connection.commit()
    finally:
        await engine.dispose()


def _run_alembic(connection: Connection, url: str, action: AlembicAction) -> None:
    config = alembic_config(url)
    config.attributes["connection"] = connection
    action(config)


@contextlib.asynccontextmanager
async def _migration_lock(connection: AsyncConnection, url: str) -> AsyncIterator[None]:
    if connection.dialect.name == "postgresql":
        async with _advisory_lock(connection):
            yield
        return
    lock_file = lock_file_for(url)
    if lock_file is None:
        yield  # an in-memory database belongs to one process: nothing to guard
        return
    with _file_lock(lock_file) as fd:

        async def try_lock() -> bool:
            return _try_flock(fd)

        await _wait_for(try_lock, f"the migration lock file {lock_file}")
        yield


@contextlib.asynccontextmanager
async def _advisory_lock(connection: AsyncConnection) -> AsyncIterator[None]:
    async def try_lock() -> bool:
        result = await connection.scalar(
            text("SELECT pg_try_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
        await connection.commit()  # the lock is session-level: it outlives this transaction
        return bool(result)

    await _wait_for(try_lock, "the PostgreSQL migration advisory lock")
    try:
        yield
    finally:
        await _release_advisory_lock(connection)


async def _release_advisory_lock(connection: AsyncConnection) -> None:
    # Best effort: if this fails the session ends with the engine, which frees the lock too.
    try:
        await connection.rollback()
        await connection.execute(
            text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
        )
        await connection.commit()
    except Exception:
        logger.warning("could not release the migration lock explicitly", exc_info=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[int]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        yield fd
    finally:
        os.close(fd)  # closing the descriptor drops the flock


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


async def _wait_for(attempt: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``attempt`` (non-blocking, so cancellation is always safe) until it succeeds."""
    deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
    while not await attempt():
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"waited {LOCK_TIMEOUT_SECONDS:.0f} s for {what}; another process is still "
                "migrating the registry"
            )
        await asyncio.sleep(_POLL_SECONDS)
