"""The outermost middleware's body read: a body that is already there is read with no
deadline armed; any wait runs under the body deadline (408 past it); sizes are capped
either way; what the app receives is what the client sent, in order; a cancelled request
cancels the receive it was waiting on."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from app.api.access import AccessTable
from app.api.middleware import RequestMiddleware, is_loopback
from app.settings import Settings

Message = dict[str, Any]
PATH = "/api/external-db-connections/1/query"


def _scope(length: int | None = None) -> dict[str, Any]:
    headers = [(b"content-type", b"application/json")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http", "method": "POST", "path": PATH, "headers": headers,
            "client": ("127.0.0.1", 5000), "query_string": b"", "root_path": ""}


class _Client:
    """The messages a client sends: each after its delay (0: there already)."""

    def __init__(self, *messages: tuple[float, Message]) -> None:
        self.messages = list(messages)
        self.waits = 0
        self.cancelled = False

    async def receive(self) -> Message:
        if not self.messages:
            await asyncio.Event().wait()  # nothing more: a client that says nothing
        delay, message = self.messages.pop(0)
        if delay:
            self.waits += 1
            try:
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        return message


class _App:
    """Records what it receives (until the end of the body) and answers 200."""

    def __init__(self) -> None:
        self.received: list[Message] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            self.received.append(message)
            if message["type"] != "http.request" or not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.fixture
def deadlines(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[float | None]]:
    """The delays of every ``asyncio.timeout`` armed meanwhile."""
    armed: list[float | None] = []
    real = asyncio.timeout

    def counting(delay: float | None) -> AbstractAsyncContextManager[Any]:
        armed.append(delay)
        return real(delay)

    monkeypatch.setattr(asyncio, "timeout", counting)
    yield armed


def _middleware(app: _App, **settings: Any) -> RequestMiddleware:
    values: dict[str, Any] = {"encryption_keys": "x" * 43 + "=",
                              "body_timeout_seconds": 0.5, "max_body_bytes": 2048}
    return RequestMiddleware(app, settings=Settings(**(values | settings)),
                             access=AccessTable({}))


async def _serve(middleware: RequestMiddleware, client: _Client,
                 length: int | None = None) -> tuple[int, dict[bytes, bytes], Any]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(_scope(length), client.receive, send)
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], dict(sent[0]["headers"]), json.loads(body)


def _chunk(body: bytes, more: bool) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def test_a_body_already_there_arms_no_deadline(deadlines: list[float | None]) -> None:
    app = _App()
    client = _Client((0, _chunk(b'{"sql": "SELECT 1"}', False)))
    status, headers, _ = await _serve(_middleware(app), client)
    assert status == 200 and headers[b"x-request-id"]
    assert app.received == [_chunk(b'{"sql": "SELECT 1"}', False)]
    assert deadlines == [] and client.waits == 0


async def test_a_body_in_chunks_is_replayed_in_order_under_one_deadline(
    deadlines: list[float | None],
) -> None:
    chunks = [_chunk(b'{"sql": ', True), _chunk(b'"SELECT', True), _chunk(b' 1"}', False)]
    for first_delay in (0, 0.01):  # the first chunk there already, or waited for
        app = _App()
        deadlines.clear()
        client = _Client((first_delay, chunks[0]), (0.01, chunks[1]), (0, chunks[2]))
        status, _, _ = await _serve(_middleware(app), client)
        assert status == 200
        assert app.received == chunks
        assert deadlines == [0.5]


async def test_a_body_that_stops_coming_is_cut_at_the_deadline() -> None:
    for first_delay in (0, 0.01):
        app = _App()
        client = _Client((first_delay, _chunk(b'{"sql": ', True)), (5.0, _chunk(b"1}", False)))
        began = asyncio.get_running_loop().time()
        status, headers, body = await _serve(_middleware(app), client)
        assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"
        assert headers[b"connection"] == b"close"
        assert 0.4 < asyncio.get_running_loop().time() - began < 2
        assert app.received == [] and client.cancelled  # the pending receive was cancelled


async def test_a_body_that_never_starts_is_cut_at_the_deadline() -> None:
    client = _Client()
    status, _, body = await _serve(_middleware(_App()), client)
    assert status == 408 and body["error"]["code"] == "REQUEST_TIMEOUT"


async def test_too_large_at_once_or_in_chunks_without_content_length() -> None:
    for messages in (
        [(0, _chunk(b"x" * 2049, False))],
        [(0, _chunk(b"x" * 1500, True)), (0.01, _chunk(b"x" * 600, False))],
        [(0, _chunk(b"x" * 1500, True)), (0, _chunk(b"x" * 600, True))],
    ):
        app = _App()
        status, _, body = await _serve(_middleware(app), _Client(*messages))
        assert status == 413 and body["error"]["code"] == "PAYLOAD_TOO_LARGE", messages
        assert app.received == []
    app = _App()
    status, _, _ = await _serve(_middleware(app), _Client((0, _chunk(b"x" * 2048, False))))
    assert status == 200 and app.received == [_chunk(b"x" * 2048, False)]


async def test_a_disconnect_before_the_body_reaches_the_app() -> None:
    for delay in (0, 0.01):
        app = _App()
        await _serve(_middleware(app), _Client((delay, {"type": "http.disconnect"})))
        assert app.received == [{"type": "http.disconnect"}]


async def test_a_request_cancelled_while_its_body_is_awaited_cancels_that_receive() -> None:
    client = _Client((5.0, _chunk(b"{}", False)))
    task = asyncio.create_task(_serve(_middleware(_App(), body_timeout_seconds=30), client))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert client.cancelled


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("::1", True), ("127.0.0.2", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("::ffff:10.0.0.1", False), ("fe80::1%eth0", False),
    ("192.168.1.127", False), ("not an address", False), ("0:0:0:0:0:0:0:1", True),
])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback((host, 5000)) is loopback
    assert is_loopback(None) is True  # no address (a Unix socket): local
