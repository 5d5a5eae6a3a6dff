"""How the bench starts its servers: ``dbpool serve`` and the uvicorn baselines."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sqlite3
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from bench.fixtures import DbTarget
from bench.procs import ProcessGroup, Server, free_port

__all__ = ["baseline_argv", "baseline_env", "raise_id_floor", "start_service"]


def _dbpool_script() -> str:
    script = Path(sys.executable).with_name("dbpool")
    if script.exists():
        return str(script)
    found = shutil.which("dbpool")
    if found is None:
        raise RuntimeError("no `dbpool` console script: pip install -e . first")
    return found


def _clean_env() -> dict[str, str]:
    # The caller's own DBPOOL_* (API keys, registry) must not leak into a bench server.
    return {k: v for k, v in os.environ.items() if not k.startswith("DBPOOL_")}


def start_service(
    group: ProcessGroup, name: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> Server:
    """``dbpool serve`` (one worker) with a fresh SQLite registry and a fresh Fernet key."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = _clean_env() | {
        "DBPOOL_HOST": "127.0.0.1",
        "DBPOOL_PORT": str(port),
        "DBPOOL_REGISTRY_URL": f"sqlite+aiosqlite:///{workdir}/reg.sqlite3",
        "DBPOOL_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "DBPOOL_KEY_FILE": str(workdir / "unused.key"),
        "DBPOOL_LOG_LEVEL": "WARNING",
    }
    env |= extra_env or {}
    return group.start(name, [_dbpool_script(), "serve"], env, port)


def raise_id_floor(workdir: Path) -> None:
    """Registrations in the (migrated, running) service of ``workdir`` get ids from a random
    floor up. Its pools are named ``dbpool:<id>`` on PostgreSQL, where tests on the shared
    server count and terminate backends by that name: a low id is everyone's."""
    # SQLite hands out max(id) + 1: an inactive placeholder row sets the floor (the tests
    # use 100000-899999, tests/support/api.py).
    with contextlib.closing(sqlite3.connect(workdir / "reg.sqlite3")) as conn:
        conn.execute(
            "INSERT INTO external_db_connections (id, name, db_type, host, port, database,"
            " username, password_encrypted, is_active) VALUES"
            " (?, 'bench-id-floor', 'postgresql', '127.0.0.1', 5432, 'x', 'x', 'x', 0)",
            (random.randint(900_000, 999_999),),
        )
        conn.commit()


def baseline_argv(module: str, port: int) -> list[str]:
    """uvicorn with uvloop + httptools, one worker, no access log — like ``dbpool serve``."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        f"bench.baselines.{module}:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--workers",
        "1",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def baseline_env(db: DbTarget | None, pool_size: int) -> dict[str, str]:
    env = _clean_env() | {"BENCH_POOL_SIZE": str(pool_size)}
    if db is not None:
        env |= {
            "BENCH_DB_ENGINE": db.engine,
            "BENCH_DB_HOST": db.host,
            "BENCH_DB_PORT": str(db.port),
            "BENCH_DB_DATABASE": db.database,
            "BENCH_DB_USER": db.user,
            "BENCH_DB_PASSWORD": db.password,
        }
    return env
