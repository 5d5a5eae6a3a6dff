"""The one pure ASGI middleware, outermost: request id, body size limit, last-resort 500.

Being outermost, every response (the 413 and the 500 for an unhandled exception included)
carries ``X-Request-ID`` and the envelope. One layer rather than one per concern: each
layer is paid on every request, and the query path is measured in microseconds.
"""

from __future__ import annotations

import logging
import re
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.errors import error_response, unhandled_error_response
from app.errors import PayloadTooLarge
from app.logs import request_id_var

__all__ = ["MAX_BODY_BYTES", "RequestMiddleware"]

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = b"x-request-id"
# Bounds the read loop even for a client that streams empty chunks.
_MAX_BODY_MESSAGES = 65536
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")

logger = logging.getLogger(__name__)


def _read_headers(scope: Scope) -> tuple[str, int | None]:
    """The request id (the caller's if sane, else a new one) and the declared body length."""
    offered: bytes | None = None
    length: int | None = None
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            offered = value
        elif name == b"content-length" and value.isdigit():
            length = int(value)
    # Echoing arbitrary caller text into headers and logs invites injection: sane tokens only.
    if offered is not None and _SANE_ID.fullmatch(offered):
        return offered.decode(), length
    return uuid.uuid4().hex, length


class RequestMiddleware:
    """Assigns the request id (logs and response), refuses bodies over ``max_bytes`` with 413
    (by Content-Length and by counting chunks) and turns an unhandled exception into a 500.

    A body without a Content-Length (chunked) is read up to ``max_bytes`` before the app
    runs and replayed to it; later ``receive`` calls go to the server so that a disconnect
    is still seen.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id, declared = _read_headers(scope)
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        token = request_id_var.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            if declared is not None:
                # The server never passes on more than the declared length: a declared
                # length within the limit needs no counting, and the app reads the body.
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send_with_id)
                else:
                    await self.app(scope, receive, send_with_id)
                return
            buffered = await self._read_body(receive)
            if buffered is None:
                await self._refuse(scope, receive, send_with_id)
                return

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await receive()

            await self.app(scope, replay, send_with_id)
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
