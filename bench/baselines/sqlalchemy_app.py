"""Baseline: the service a user would write by hand from the same stack — FastAPI and one
SQLAlchemy ``AsyncEngine`` per database (pool of 10, no overflow, so every server holds the
same 10 connections), ``text()`` with named parameters, ``async with engine.connect()``.
No auth, envelope, gate, breaker or metrics; SQLAlchemy's own reset (rollback) on return."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import URL, text
from sqlalchemy.ext.asyncio import create_async_engine

from bench.baselines import QUERY_PATH, db_env

__all__ = ["create_app"]

_DRIVERS = {"postgresql": "postgresql+asyncpg", "mariadb": "mysql+aiomysql"}


class QueryIn(BaseModel):
    sql: str
    params: dict[str, Any] = {}


def create_app() -> FastAPI:
    """The app; the engine is created in the lifespan and disposed on the way out."""
    cfg = db_env()
    url = URL.create(
        _DRIVERS[cfg.engine],
        username=cfg.user,
        password=cfg.password,
        host=cfg.host,
        port=cfg.port,
        database=cfg.database,
    )
    connect_args: dict[str, Any] = (
        {"server_settings": {"application_name": "bench-sqlalchemy"}}
        if cfg.engine == "postgresql"
        else {}
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = create_async_engine(
            url, pool_size=cfg.pool_size, max_overflow=0, connect_args=connect_args
        )
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(QUERY_PATH)
    async def query(connection_id: int, body: QueryIn, request: Request) -> JSONResponse:
        async with request.app.state.engine.connect() as conn:
            result = await conn.execute(text(body.sql), body.params)
            columns = list(result.keys())
            rows = [dict(row) for row in result.mappings()]
        data = {"columns": columns, "rows": rows, "rowCount": len(rows)}
        return JSONResponse({"success": True, "data": data})

    return app
