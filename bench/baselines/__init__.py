"""Baseline servers the service is compared with: what a user would hand-roll.

Each module has a ``create_app()`` factory for ``uvicorn --factory`` and serves the same
path and body as the service's query route, so one load generator drives all of them:
``POST /api/external-db-connections/{id}/query`` with ``{"sql": ..., "params": {...}}``
(named ``:name`` placeholders, the service's portable style). ``sqlalchemy_app`` is the
service a user would write from the same stack (one AsyncEngine, ``text()``); the raw-driver
apps rewrite ``:name`` once per statement text into their driver's style (``to_driver``).
Database coordinates come from ``BENCH_DB_*`` environment variables (see ``db_env``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["QUERY_PATH", "DbEnv", "db_env", "to_driver"]

QUERY_PATH = "/api/external-db-connections/{connection_id}/query"
_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@lru_cache(maxsize=1024)
def _rewrite(sql: str, style: str) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []

    def swap(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}" if style == "numeric" else f"%({match.group(1)})s"

    return _NAMED.sub(swap, sql), tuple(names)


def to_driver(sql: str, params: Mapping[str, Any], style: str) -> tuple[str, Any]:
    """``sql`` with ``:name`` placeholders in the driver's ``style`` and the matching
    arguments: ``"numeric"`` (asyncpg: ``$1``, a list) or ``"pyformat"`` (``%(name)s``,
    the mapping itself). Bench statements contain no literal ``%`` or ``::`` casts."""
    text, names = _rewrite(sql, style)
    if style == "numeric":
        return text, [params[n] for n in names]
    return text, params


@dataclass(frozen=True)
class DbEnv:
    """Where a baseline connects and how big its pool is."""

    engine: str  # "postgresql" | "mariadb"
    host: str
    port: int
    database: str
    user: str
    password: str
    pool_size: int


def db_env() -> DbEnv:
    """Read ``BENCH_DB_ENGINE/HOST/PORT/DATABASE/USER/PASSWORD`` and ``BENCH_POOL_SIZE``."""
    env = os.environ
    return DbEnv(
        engine=env["BENCH_DB_ENGINE"],
        host=env.get("BENCH_DB_HOST", "127.0.0.1"),
        port=int(env["BENCH_DB_PORT"]),
        database=env["BENCH_DB_DATABASE"],
        user=env["BENCH_DB_USER"],
        password=env["BENCH_DB_PASSWORD"],
        pool_size=int(env.get("BENCH_POOL_SIZE", "10")),
    )
