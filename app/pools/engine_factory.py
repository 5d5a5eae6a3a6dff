"""Builds the one ``AsyncEngine`` behind a managed pool, with each dialect's details.

The URL is built with ``URL.create()`` (its repr masks the password); credentials and
address also go to the driver explicitly, so nothing is filled in from ``PG*``
environment variables, ``~/.pgpass`` or a service file. Every new connection first
passes ``DBPOOL_ALLOWED_HOSTS`` (``allowlist.checked_address``) and goes to the address
that was checked; TLS contexts come from ``tls``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Dialect, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.util import await_only

from app.domain import ConnectionConfig, DbType
from app.errors import HostNotAllowed
from app.pools.allowlist import Resolve, checked_address, system_resolve
from app.pools.drivers import adapter_for
from app.pools.queue_pool import TrimmableQueuePool
from app.pools.session_reset import attach_session_events
from app.pools.tls import mysql_ssl, pg_ssl
from app.pools.translate import translate_error
from app.settings import Settings

__all__ = ["OnRefused", "build_engine", "connect_args", "engine_url"]

OnRefused = Callable[[HostNotAllowed], None]

# Never read: handing asyncpg a path that does not exist stops it looking in $HOME.
_NO_FILE = str(Path("/nonexistent/dbpool/no-such-file"))
# Statements kept prepared per connection (asyncpg's LRU, keyed by SQL text).
_PG_STATEMENT_CACHE = 100


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
        "ssl": pg_ssl(config),
        "timeout": config.connection_timeout,
        # Startup-packet settings survive RESET ALL on return.
        "server_settings": settings,
        # The reset on return keeps protocol-level prepared statements (session_reset), so
        # asyncpg's statement cache saves a Parse round trip on every repeated statement.
        "statement_cache_size": _PG_STATEMENT_CACHE,
        # SQLAlchemy's adapter (health checks, tests) keeps its own small cache.
        "prepared_statement_cache_size": 32,
    }


def _mysql_connect_args(config: ConnectionConfig) -> dict[str, Any]:
    args: dict[str, Any] = {
        "password": config.password.get_secret_value(),
        "connect_timeout": config.connection_timeout,
        "local_infile": False,
        "charset": "utf8mb4",
        # Sessions run in autocommit (session_reset re-applies it on every return): a
        # /query statement commits on its own, a /transaction begins explicitly.
        "autocommit": True,
    }
    context = mysql_ssl(config)
    if context is not None:
        args["ssl"] = context
    return args


def build_engine(
    config: ConnectionConfig,
    settings: Settings,
    *,
    on_refused: OnRefused | None = None,
    resolve: Resolve = system_resolve,
) -> AsyncEngine:
    """One engine, bounded at ``max_connections``, with the session hygiene hooks attached.

    ``on_refused`` hears of a new connection the allowlist refused (the pool then goes);
    ``resolve`` is the name resolver the allowlist uses (the system's)."""
    args = connect_args(config)
    # Checks the driver's private surface now (once per process); one warning if missing.
    fast = adapter_for(config.db_type, settings.mysql_driver).fast
    if not fast and "statement_cache_size" in args:
        # The public path cannot clear SQLAlchemy's statement cache after a caller's
        # DEALLOCATE ALL: keep none.
        args["prepared_statement_cache_size"] = 0
    engine = create_async_engine(
        engine_url(config, settings),
        connect_args=args,
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
    pool = engine.pool
    assert isinstance(pool, TrimmableQueuePool)
    pool.check_surface()
    attach_session_events(engine, config)
    _check_allowlist(engine, config, settings, on_refused, resolve)
    _translate_errors(engine, config)
    return engine


def _check_allowlist(engine: AsyncEngine, config: ConnectionConfig, settings: Settings,
                     on_refused: OnRefused | None, resolve: Resolve) -> None:
    """Before every new connection: resolve, check every address, connect to the checked
    one (``do_connect`` runs in SQLAlchemy's greenlet, so it may await)."""
    rules = settings.allowed_host_rules()
    if not rules:
        return

    @event.listens_for(engine.sync_engine, "do_connect")
    def _on_connect(dialect: Dialect, record: ConnectionPoolEntry, cargs: Any,
                    cparams: dict[str, Any]) -> None:
        try:
            cparams["host"] = await_only(checked_address(config.host, rules, resolve))
        except HostNotAllowed as exc:
            if on_refused is not None:
                on_refused(exc)
            raise


def _translate_errors(engine: AsyncEngine, config: ConnectionConfig) -> None:
    """Errors of statements run through SQLAlchemy itself (health checks, the catalogue)
    leave the engine as our own ``DatabaseError``s, like those of the query path.

    Connect failures are left alone: ``ManagedPool`` translates them with the breaker (and
    scrubs the password). SQLAlchemy still invalidates a connection its dialect calls
    disconnected.
    """

    @event.listens_for(engine.sync_engine, "handle_error")
    def _on_error(context: ExceptionContext) -> BaseException | None:
        if context.connection is None or context.is_pre_ping:
            return None
        return translate_error(context.original_exception, config.db_type)
