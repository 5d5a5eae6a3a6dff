"""Pure ASGI middleware: request ids (outermost) and the request body size limit.

``RequestContextMiddleware`` is the outermost layer so that every response, including the
500 for an unhandled exception, carries ``X-Request-ID`` and the envelope.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, unhandled_error_response
from app.errors import PayloadTooLarge
from app.logs import request_id_var

__all__ = ["MAX_BODY_BYTES", "BodySizeLimitMiddleware", "RequestContextMiddleware"]

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = "X-Request-ID"
# Bounds the read loop even for a client that streams empty chunks.
_MAX_BODY_MESSAGES = 65536
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

logger = logging.getLogger(__name__)


def _request_id(scope: Scope) -> str:
    offered = Headers(scope=scope).get(REQUEST_ID_HEADER)
    # Echoing arbitrary caller text into headers and logs invites injection: take sane tokens only.
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Assigns the request id, sets it for logs, adds it to the response, catches the rest."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error on %s %s",
                scope["method"],
                scope["path"],
                extra={"request_id": request_id},
            )
            if started:
                raise
            await unhandled_error_response()(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


class BodySizeLimitMiddleware:
    """Refuses bodies over ``max_bytes`` with 413, by Content-Length and by counting chunks.

    The body (at most ``max_bytes``) is read before the app runs and replayed to it; later
    ``receive`` calls go to the server so that a disconnect is still seen.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        buffered = await self._read_body(receive)
        if buffered is None:
            await self._refuse(scope, receive, send)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's messages up to the end of the body, or None when it is too large."""
        messages: list[Message] = []
        total = 0
        for _ in range(_MAX_BODY_MESSAGES):
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages
        return None  # a stream of empty chunks: refuse rather than wait forever

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body larger than {self.max_bytes} bytes",
            details={"maxBytes": self.max_bytes},
        )
        await error_response(error, {"Connection": "close"})(scope, receive, send)
