"""The composition root of the HTTP service: ``create_app(settings)`` and its lifespan.

No module-level app or settings: ``uvicorn --factory app.main:create_app`` (or
``dbpool serve``) calls ``create_app()``, which reads ``DBPOOL_*`` once. The lifespan builds
the parts in order — logging, secret box, registry engine, repository, resolver, pool
manager, metrics, pool history, housekeeper — keeps them on ``app.state`` and tears them down
in reverse order.

The registry schema is NOT migrated here: run ``dbpool migrate`` first (``dbpool serve``
does it for you); until then ``/readyz`` answers 503 and says so.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from pydantic import ValidationError

from app import __version__
from app.api.access import AccessTable
from app.api.deps import ApiParts
from app.api.errors import install_error_handlers
from app.api.middleware import RequestMiddleware
from app.api.routes import ROUTERS
from app.api.routes.health import ReadinessCheck
from app.logs import configure_logging
from app.pools.history import HistorySampler
from app.pools.housekeeper import Housekeeper
from app.pools.manager import PoolManager
from app.pools.metrics import PoolMetrics
from app.registry.crypto import load_secret_box
from app.registry.db import create_registry_engine, create_sessionmaker
from app.registry.repository import ConnectionRepository
from app.registry.resolver import RegistryResolver
from app.settings import Settings
from app.tracing import Tracing, tracing_from_env

__all__ = ["SettingsError", "create_app", "load_settings"]

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
dbpool owns the connections to many external databases (PostgreSQL, MySQL, MariaDB).
Register a database once under `/api/external-db-connections`, then send SQL by its id;
each registration gets one bounded, monitored pool.

Auth: `Authorization: Bearer <key>`. `DBPOOL_API_KEY` reads, queries and status;
`DBPOOL_ADMIN_API_KEY` everything, including registry writes.
"""


# FastAPI's own OpenTelemetry hooks (newer FastAPI): dbpool makes its spans itself
# (``app.tracing``, from the OTEL_* variables), so FastAPI's would be a second request span
# whenever anything installs a global provider, and asking whether one is installed costs
# every request a few microseconds. Off, where this FastAPI has them.
_NO_FASTAPI_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class SettingsError(ValueError):
    """The ``DBPOOL_*`` environment is invalid; the message names each variable, no values."""


def _summarise(exc: ValidationError) -> str:
    # Pydantic's own text repeats the input, which may be a key: keep only where and what.
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        name = f"DBPOOL_{where.upper()}" if where else "settings"
        problems.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)


def load_settings() -> Settings:
    """``Settings()`` from the environment, or ``SettingsError`` with a value-free summary."""
    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_summarise(exc)) from None


def _warn_about_auth(settings: Settings) -> None:
    if not settings.auth_enabled and settings.allow_unauthenticated_remote:
        logger.warning(
            "auth is OFF: neither DBPOOL_API_KEY nor DBPOOL_ADMIN_API_KEY is set, and "
            "DBPOOL_ALLOW_UNAUTHENTICATED_REMOTE is on: anyone who can reach this port can "
            "register databases and run SQL"
        )
    elif not settings.auth_enabled:
        logger.warning(
            "auth is OFF: neither DBPOOL_API_KEY nor DBPOOL_ADMIN_API_KEY is set; only "
            "loopback clients are answered (protected mode). Set the keys to serve a network"
        )
    elif settings.admin_api_key is None:
        logger.warning("DBPOOL_ADMIN_API_KEY is not set: registry writes are refused (403)")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if app.state.configure_logs:
        configure_logging(settings.log_level, settings.log_format)
    _warn_about_auth(settings)
    tracing: Tracing = app.state.tracing
    tracing.report(logger)
    async with AsyncExitStack() as stack:  # unwinds in reverse order, also on failure
        stack.callback(tracing.shutdown)  # last: flushes the spans of the shutdown too
        box = load_secret_box(settings)
        engine = create_registry_engine(settings.registry_url.get_secret_value())
        stack.push_async_callback(engine.dispose)
        repository = ConnectionRepository(create_sessionmaker(engine), box)
        resolver = RegistryResolver(repository)
        pool_metrics = PoolMetrics()
        pool_manager = PoolManager(resolver, settings, metrics=pool_metrics, tracing=tracing)
        pool_metrics.watch(pool_manager)
        stack.push_async_callback(pool_manager.aclose)
        history = HistorySampler(
            pool_manager, pool_metrics, period=settings.history_interval_seconds,
            window=settings.history_window_seconds,
        )
        history.start()
        stack.push_async_callback(history.aclose)
        housekeeper = Housekeeper(pool_manager, settings, metrics=pool_metrics)
        housekeeper.start()
        stack.push_async_callback(housekeeper.aclose)  # pushed last: stops first
        app.state.pool_metrics = pool_metrics
        app.state.housekeeper = housekeeper
        app.state.readiness = ReadinessCheck(engine)
        app.state.parts = ApiParts(settings, repository, pool_manager, history)
        logger.info("dbpool %s started", __version__)
        yield
        logger.info("dbpool stopping")
    logger.info("dbpool stopped")


def create_app(
    settings: Settings | None = None,
    *,
    configure_logs: bool = True,
    tracing: Tracing | None = None,
) -> FastAPI:
    """The ASGI app. ``settings`` default to the environment (exits with a summary if invalid);
    ``configure_logs=False`` leaves logging alone (tests that capture logs); ``tracing``
    defaults to what the ``OTEL_*`` variables ask for (``app.tracing``: off when unset)."""
    if settings is None:
        try:
            settings = load_settings()
        except SettingsError as exc:
            raise SystemExit(f"dbpool: {exc}") from None
    app = FastAPI(title="dbpool", version=__version__, description=_DESCRIPTION, lifespan=_lifespan,
                  **_NO_FASTAPI_TELEMETRY)
    app.state.settings = settings
    app.state.configure_logs = configure_logs
    app.state.tracing = tracing = tracing_from_env() if tracing is None else tracing
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    tracing.install(app)  # the request span, inside the request id (nothing when off)
    # Outermost of ours: the request id wraps everything, even the 413 and the 500s.
    app.add_middleware(RequestMiddleware, settings=settings, access=AccessTable.of(ROUTERS))
    return app
