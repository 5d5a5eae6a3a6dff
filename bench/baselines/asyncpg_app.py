"""Baseline: a minimal FastAPI endpoint on a raw asyncpg pool (the limit for this job)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench.baselines import QUERY_PATH, db_env, to_driver

__all__ = ["create_app"]


class QueryIn(BaseModel):
    sql: str
    params: dict[str, Any] = {}


def create_app() -> FastAPI:
    """The app; the pool opens in the lifespan with ``min_size = max_size = pool size``."""
    cfg = db_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            host=cfg.host,
            port=cfg.port,
            database=cfg.database,
            user=cfg.user,
            password=cfg.password,
            min_size=cfg.pool_size,
            max_size=cfg.pool_size,
            server_settings={"application_name": "bench-asyncpg"},
        )
        try:
            yield
        finally:
            await app.state.pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(QUERY_PATH)
    async def query(connection_id: int, body: QueryIn, request: Request) -> JSONResponse:
        sql, args = to_driver(body.sql, body.params, "numeric")
        async with request.app.state.pool.acquire() as conn:
            records = await conn.fetch(sql, *args)
        columns = list(records[0].keys()) if records else []
        rows = [dict(r) for r in records]
        data = {"columns": columns, "rows": rows, "rowCount": len(rows)}
        return JSONResponse({"success": True, "data": data})

    return app
