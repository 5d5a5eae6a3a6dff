"""Baseline servers the service is compared with: what a user would hand-roll.

Each module has a ``create_app()`` factory for ``uvicorn --factory`` and serves the same
path and body as the service's query route, so one load generator drives all of them:
``POST /api/external-db-connections/{id}/query`` with ``{"sql": ..., "params": [...]}``.
Database coordinates come from ``BENCH_DB_*`` environment variables (see ``db_env``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["QUERY_PATH", "DbEnv", "db_env"]

QUERY_PATH = "/api/external-db-connections/{connection_id}/query"


@dataclass(frozen=True)
class DbEnv:
    """Where a baseline connects and how big its pool is."""

    host: str
    port: int
    database: str
    user: str
    password: str
    pool_size: int


def db_env() -> DbEnv:
    """Read ``BENCH_DB_HOST/PORT/DATABASE/USER/PASSWORD`` and ``BENCH_POOL_SIZE``."""
    env = os.environ
    return DbEnv(
        host=env.get("BENCH_DB_HOST", "127.0.0.1"),
        port=int(env["BENCH_DB_PORT"]),
        database=env["BENCH_DB_DATABASE"],
        user=env["BENCH_DB_USER"],
        password=env["BENCH_DB_PASSWORD"],
        pool_size=int(env.get("BENCH_POOL_SIZE", "10")),
    )
