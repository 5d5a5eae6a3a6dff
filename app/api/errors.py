"""The ONE place exceptions become HTTP responses.

``DbPoolError`` -> its status and code (+ ``Retry-After``); request validation -> 422 naming
each field but never echoing the input; Starlette's 404/405 -> envelopes; anything else ->
500 ``INTERNAL_ERROR`` without a traceback (``unhandled_error_response``, used by the
outermost middleware so that even those responses carry the request id).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import (
    DbPoolError,
    Forbidden,
    InternalError,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    Unauthorized,
    ValidationFailed,
)
from app.logs import current_request_id

__all__ = [
    "error_response",
    "field_problems",
    "install_error_handlers",
    "unhandled_error_response",
    "validation_failed",
]

logger = logging.getLogger(__name__)

_HTTP_ERRORS: dict[int, type[DbPoolError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: RouteNotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
}


def error_response(exc: DbPoolError, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error envelope for ``exc``, with ``Retry-After`` when the error carries one."""
    all_headers = dict(headers or {})
    if exc.retry_after is not None:
        all_headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    body = {
        "success": False,
        "error": {"code": exc.code, "message": exc.message, "details": _details(exc)},
        "requestId": current_request_id(),
    }
    return JSONResponse(body, status_code=exc.status, headers=all_headers)


def _details(exc: DbPoolError) -> dict[str, Any]:
    """Every 422 names its fields the same way (``errors: [{loc, msg, type}]``), whether the
    request schema or a deeper rule (registry, query binding) refused the value."""
    details = exc.details
    if isinstance(exc, ValidationFailed) and "errors" not in details and "field" in details:
        problem = {"loc": ["body", details["field"]], "msg": exc.message, "type": "value_error"}
        return {**details, "errors": [problem]}
    return details


def unhandled_error_response() -> JSONResponse:
    """500 for a bug: a fixed message, the request id to find the logged traceback."""
    return error_response(InternalError("internal error; the request id locates it in the logs"))


def field_problems(errors: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``loc``/``msg``/``type`` of each error; ``input`` and ``ctx`` dropped (they echo values)."""
    return [
        {
            "loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
            "msg": str(e.get("msg", "")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]


def validation_failed(problems: list[dict[str, Any]]) -> ValidationFailed:
    """A 422 naming every failing field, e.g. ``invalid request: body.port, body.host``."""
    where = ", ".join(".".join(str(p) for p in problem["loc"]) for problem in problems)
    return ValidationFailed(f"invalid request: {where}", details={"errors": problems})


async def _on_dbpool_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DbPoolError)
    if exc.status == 500:
        logger.error("request failed: %s %s", exc.code, exc.message)
    elif exc.status > 500:  # an outage elsewhere (502/503/504), not a fault of ours
        logger.warning("request failed: %s %s", exc.code, exc.message)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return error_response(exc, headers)


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(validation_failed(field_problems(exc.errors())))


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    error_type = _HTTP_ERRORS.get(exc.status_code)
    if error_type is None:
        error: DbPoolError = (
            ValidationFailed(str(exc.detail))
            if exc.status_code < 500
            else (InternalError("internal error"))
        )
    elif error_type is MethodNotAllowed:
        error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
    elif error_type is RouteNotFound:
        error = RouteNotFound(f"no route {request.url.path}")
    else:
        error = error_type(str(exc.detail))
    return error_response(error, exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(DbPoolError, _on_dbpool_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
