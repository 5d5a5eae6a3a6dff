"""The HTTP ceiling: the same route returning a constant, no database at all."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bench.baselines import QUERY_PATH

__all__ = ["create_app"]

_CONSTANT = {"success": True, "data": {"columns": ["x"], "rows": [{"x": 1}], "rowCount": 1}}


class QueryIn(BaseModel):
    sql: str
    params: dict[str, Any] = {}


def create_app() -> FastAPI:
    """The app: parses the body like the others, answers a constant."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict[str, bool]:
        return {"ok": True}

    @app.post(QUERY_PATH)
    async def query(connection_id: int, body: QueryIn) -> JSONResponse:
        return JSONResponse(_CONSTANT)

    return app
