"""Baseline: a minimal FastAPI endpoint on a raw aiomysql pool (autocommit, dict rows)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiomysql
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench.baselines import QUERY_PATH, db_env, to_driver

__all__ = ["create_app"]


class QueryIn(BaseModel):
    sql: str
    params: dict[str, Any] = {}


def create_app() -> FastAPI:
    """The app; the pool opens in the lifespan with ``minsize = maxsize = pool size``."""
    cfg = db_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await aiomysql.create_pool(
            host=cfg.host,
            port=cfg.port,
            db=cfg.database,
            user=cfg.user,
            password=cfg.password,
            minsize=cfg.pool_size,
            maxsize=cfg.pool_size,
            autocommit=True,
        )
        try:
            yield
        finally:
            app.state.pool.close()
            await app.state.pool.wait_closed()

    app = FastAPI(lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(QUERY_PATH)
    async def query(connection_id: int, body: QueryIn, request: Request) -> JSONResponse:
        async with (
            request.app.state.pool.acquire() as conn,
            conn.cursor(aiomysql.DictCursor) as cur,
        ):
            sql, args = to_driver(body.sql, body.params, "pyformat")
            await cur.execute(sql, args or None)
            rows = await cur.fetchall()
            columns = [d[0] for d in cur.description or ()]
        data = {"columns": columns, "rows": list(rows), "rowCount": len(rows)}
        return JSONResponse({"success": True, "data": data})

    return app
