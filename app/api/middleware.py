"""The one pure ASGI middleware, outermost: request id, the gate, the body, last-resort 500.

Being outermost, every response (the 401, the 413 and the 500 for an unhandled exception
included) carries ``X-Request-ID`` and the envelope. One layer rather than one per concern:
each layer is paid on every request, and the query path is measured in microseconds.

The gate runs on the headers alone, before a byte of the body is read: protected mode (auth
off answers loopback clients only), the bearer key the route needs (``AccessTable``), the
declared body size. A refusal is sent while the body may still be arriving; the connection
stays open so that the server reads and drops the rest (``dbpool serve`` bounds that drain,
see ``protocol``) and every client, httpx included, reads the answer instead of a reset.
An accepted body is read here, up to ``max_body_bytes`` and within ``body_timeout_seconds``,
then replayed to the app: a slow sender gets 408 and its connection is closed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.api.access import AccessTable
from app.api.auth import authorize
from app.api.errors import error_response, unhandled_error_response
from app.errors import DbPoolError, Forbidden, PayloadTooLarge, RequestTimeout
from app.logs import request_id_var
from app.settings import Settings

__all__ = ["RequestMiddleware", "is_loopback"]

REQUEST_ID_HEADER = b"x-request-id"
# Bounds the read loop even for a client that streams empty chunks.
_MAX_BODY_MESSAGES = 65536
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_PROTECTED = (
    "auth is off (no DBPOOL_API_KEY / DBPOOL_ADMIN_API_KEY), so only loopback clients are "
    "answered: set DBPOOL_ADMIN_API_KEY and DBPOOL_API_KEY, or "
    "DBPOOL_ALLOW_UNAUTHENTICATED_REMOTE=true to serve this network without auth"
)

# What loopback clients are called nearly always: no address parsing for them on each request.
_USUAL_LOOPBACK = frozenset({"127.0.0.1", "::1"})

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class _Headers:
    request_id: str
    length: int | None
    token: str | None


def _read_headers(scope: Scope) -> _Headers:
    """The request id (the caller's if sane, else a new one), the declared body length and
    the bearer token."""
    offered: bytes | None = None
    length: int | None = None
    token: str | None = None
    for name, value in scope["headers"]:
        if name == REQUEST_ID_HEADER:
            offered = value
        elif name == b"content-length" and value.isdigit():
            length = int(value)
        elif name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = credentials.strip()
    # Echoing arbitrary caller text into headers and logs invites injection: sane tokens only.
    if offered is not None and _SANE_ID.fullmatch(offered):
        return _Headers(offered.decode(), length, token)
    return _Headers(os.urandom(16).hex(), length, token)  # 32 random hex digits, as uuid4().hex


def _answer_now(awaitable: Awaitable[T]) -> tuple[bool, Any]:
    """``(True, result)`` when ``awaitable`` completes without waiting, else ``(False, an
    awaitable that continues it)``: what it waits for goes to the task as if awaited."""
    steps = awaitable.__await__()
    try:
        waited_for = steps.send(None)
    except StopIteration as done:
        return True, done.value
    return False, _Continued(steps, waited_for)


class _Continued:
    """Awaiting it resumes ``steps`` (a started ``__await__`` iterator), which is waiting
    for ``waited_for``: ``yield from`` on an iterator already past its first step."""

    __slots__ = ("steps", "waited_for")

    def __init__(self, steps: Generator[Any, Any, Any], waited_for: Any) -> None:
        self.steps = steps
        self.waited_for = waited_for

    def __await__(self) -> Generator[Any, Any, Any]:
        steps, waited_for = self.steps, self.waited_for
        while True:
            try:
                sent = yield waited_for
            except GeneratorExit:
                steps.close()
                raise
            except BaseException as exc:  # cancellation included: the awaited one decides
                try:
                    waited_for = steps.throw(exc)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    waited_for = steps.send(sent)
                except StopIteration as done:
                    return done.value


def is_loopback(client: tuple[str, int] | None) -> bool:
    """A client on this machine's loopback (no address, e.g. a Unix socket, counts as local)."""
    if client is None or client[0] in _USUAL_LOOPBACK:
        return True
    try:
        address = ipaddress.ip_address(client[0].split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class RequestMiddleware:
    """Assigns the request id (logs and response), decides access from the headers, reads
    the body within its size and time bounds and turns an unhandled exception into a 500."""

    def __init__(self, app: ASGIApp, *, settings: Settings, access: AccessTable) -> None:
        self.app = app
        self.settings = settings
        self.access = access
        self.max_bytes = settings.max_body_bytes
        self.body_timeout = settings.body_timeout_seconds
        self.protected = not settings.auth_enabled and not settings.allow_unauthenticated_remote

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _read_headers(scope)
        id_header = (REQUEST_ID_HEADER, headers.request_id.encode())
        token = request_id_var.set(headers.request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        try:
            refusal = self._refusal(scope, headers)
            if refusal is not None:
                await self._refuse(refusal, scope, receive, send_with_id)
                return
            try:
                buffered = await self._read_body(receive)
            except TimeoutError:
                error = RequestTimeout(
                    f"the request body did not arrive within {self.body_timeout:g} s",
                    details={"timeoutSeconds": self.body_timeout},
                )
                await self._refuse(error, scope, receive, send_with_id, close=True)
                return
            if buffered is None:
                await self._refuse(self._too_large(), scope, receive, send_with_id)
                return

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await receive()

            await self.app(scope, replay, send_with_id)
        except Exception:
            logger.exception(
                "unhandled error on %s %s",
                scope["method"],
                scope["path"],
                extra={"request_id": headers.request_id},
            )
            if started:
                raise
            await unhandled_error_response()(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)

    def _refusal(self, scope: Scope, headers: _Headers) -> DbPoolError | None:
        """Why the headers alone already refuse this request, or None."""
        needed = self.access.needed(scope["method"], scope["path"])
        if needed is not None:
            if self.protected and not is_loopback(scope.get("client")):
                return Forbidden(_PROTECTED)
            try:
                authorize(self.settings, headers.token, needed)
            except DbPoolError as exc:
                return exc
        if headers.length is not None and headers.length > self.max_bytes:
            return self._too_large()
        return None

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body larger than {self.max_bytes} bytes",
            details={"maxBytes": self.max_bytes},
        )

    async def _read_body(self, receive: Receive) -> list[Message] | None:
        """The request's messages up to the end of the body, or None when it is too large;
        ``TimeoutError`` when it takes longer than the body timeout.

        Usually the whole body came with the headers and ``receive()`` answers without
        waiting: then no deadline is armed (arming and disarming one cost more than the rest
        of this middleware). Any wait runs under it, from the first on."""
        done, first = _answer_now(receive())
        if done and first["type"] == "http.request" and not first.get("more_body", False):
            return [first] if len(first.get("body", b"")) <= self.max_bytes else None
        async with asyncio.timeout(self.body_timeout):
            return await self._read_from(receive, first if done else await first)

    async def _read_from(self, receive: Receive, message: Message) -> list[Message] | None:
        messages: list[Message] = []
        total = 0
        for _ in range(_MAX_BODY_MESSAGES):
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages
            message = await receive()
        return None  # a stream of empty chunks: refuse rather than wait forever

    async def _refuse(
        self, error: DbPoolError, scope: Scope, receive: Receive, send: Send, *,
        close: bool = False,
    ) -> None:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
        if close:
            headers["Connection"] = "close"
        await error_response(error, headers)(scope, receive, send)
