"""Builds the one ``AsyncEngine`` behind a managed pool, with each dialect's details.

The URL is built with ``URL.create()`` (its repr masks the password); credentials and
address also go to the driver explicitly, so nothing is filled in from ``PG*``
environment variables, ``~/.pgpass`` or a service file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.domain import ConnectionConfig, DbType
from app.pools.queue_pool import TrimmableQueuePool
from app.pools.session_reset import attach_session_events
from app.settings import Settings

__all__ = ["build_engine", "connect_args", "engine_url"]

# Never read: handing asyncpg a path that does not exist stops it looking in $HOME.
_NO_FILE = str(Path("/nonexistent/dbpool/no-such-file"))


def _drivername(config: ConnectionConfig, settings: Settings) -> str:
    if config.db_type is DbType.POSTGRESQL:
        return "postgresql+asyncpg"
    return f"mysql+{settings.mysql_driver}"


def engine_url(config: ConnectionConfig, settings: Settings) -> URL:
    """The engine's URL; ``repr``/``str`` show ``***`` for the password."""
    return URL.create(
        _drivername(config, settings),
        username=config.username,
        password=config.password.get_secret_value(),
        host=config.host,
        port=config.port,
        database=config.database,
    )


def connect_args(config: ConnectionConfig) -> dict[str, Any]:
    """Keyword arguments for the driver's ``connect()``."""
    if config.db_type is DbType.POSTGRESQL:
        return _pg_connect_args(config)
    return _mysql_connect_args(config)


def _pg_connect_args(config: ConnectionConfig) -> dict[str, Any]:
    settings = {
        "application_name": config.pool_name,
        "statement_timeout": str(round(config.query_timeout * 1000)),
    }
    if config.read_only:
        settings["default_transaction_read_only"] = "on"
    return {
        # Explicit, even when empty: SQLAlchemy drops an empty password from the URL and
        # asyncpg would then try PGPASSWORD and ~/.pgpass.
        "user": config.username,
        "password": config.password.get_secret_value(),
        "host": config.host,
        "port": config.port,
        "database": config.database,
        "passfile": _NO_FILE,
        "servicefile": _NO_FILE,
        "ssl": config.options.get("sslmode", "prefer"),
        "timeout": config.connection_timeout,
        # Startup-packet settings survive DISCARD ALL / RESET ALL on return.
        "server_settings": settings,
        # DISCARD ALL drops server-side prepared statements, so neither asyncpg nor
        # SQLAlchemy's adapter may cache them across requests.
        "statement_cache_size": 0,
        "prepared_statement_cache_size": 0,
    }


def _mysql_connect_args(config: ConnectionConfig) -> dict[str, Any]:
    args: dict[str, Any] = {
        "password": config.password.get_secret_value(),
        "connect_timeout": config.connection_timeout,
        "local_infile": False,
        "charset": "utf8mb4",
    }
    ssl = config.options.get("ssl")
    if ssl is not None:
        args["ssl"] = ssl
    return args


def build_engine(config: ConnectionConfig, settings: Settings) -> AsyncEngine:
    """One engine, bounded at ``max_connections``, with the session hygiene hooks attached."""
    engine = create_async_engine(
        engine_url(config, settings),
        connect_args=connect_args(config),
        poolclass=TrimmableQueuePool,
        pool_size=config.max_connections,
        max_overflow=0,
        pool_timeout=config.connection_timeout,
        pool_recycle=settings.pool_recycle_seconds,
        # Our own bounded ping runs on checkout (session_reset); SQLAlchemy's has no timeout.
        pool_pre_ping=False,
        # Newest first, so surplus connections really sit idle and can be trimmed.
        pool_use_lifo=True,
        # The reset hook rolls back and cleans the session itself.
        pool_reset_on_return=None,
        hide_parameters=True,
        pool_logging_name=config.pool_name,
        logging_name=config.pool_name,
    )
    attach_session_events(engine, config)
    return engine
