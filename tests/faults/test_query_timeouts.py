"""Statements past their timeout, and callers that hang up: the work stops on the server,
the connection comes back clean or is discarded, the pool keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from tests.support.query import (
    BASE,
    ENGINES,
    Api,
    api,
    query_registry,
    running_statements,
    unique,
    wait_until,
)

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb, pytest.mark.slow]


def sleep_sql(db_type: str, seconds: float, marker: str) -> str:
    call = f"pg_sleep({seconds})" if db_type == "postgresql" else f"SLEEP({seconds})"
    return f"SELECT {call} AS {marker}"


@pytest.mark.parametrize("db_type", ENGINES)
async def test_timeout_is_504_and_the_statement_is_gone(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    marker = unique("slow")
    started = time.monotonic()
    response = await api.query(cid, sleep_sql(db_type, 5, marker), timeoutSeconds=1)
    elapsed = time.monotonic() - started
    assert response.status_code == 504, response.text
    body = response.json()
    assert body["error"]["code"] == "QUERY_TIMEOUT"
    assert 0.9 <= elapsed < 2.5, elapsed
    await asyncio.sleep(1.0)
    assert await running_statements(db_type, marker) == 0
    assert await api.rows(cid, "SELECT 1 AS ok") == [{"ok": 1}]
    snap = api.snapshot(cid)
    assert snap.checked_out == 0 and snap.stats.query_errors == 1


@pytest.mark.parametrize("db_type", ENGINES)
async def test_server_side_limit_is_504_too(api: Api, db_type: str) -> None:
    # queryTimeout 1 s on the connection: the session's own limit fires first.
    cid = await api.register(db_type, queryTimeout=1)
    marker = unique("srv")
    started = time.monotonic()
    response = await api.query(cid, sleep_sql(db_type, 5, marker))
    assert time.monotonic() - started < 2.5
    assert response.status_code == 504, response.text
    error = response.json()["error"]
    assert error["code"] == "QUERY_TIMEOUT"
    # The server's own error (57014 / 1969), not the client timer.
    assert error["details"].get("sqlstate") == "57014" or error["details"].get("errno") == 1969
    assert await running_statements(db_type, marker) == 0
    assert await api.rows(cid, "SELECT 1 AS ok") == [{"ok": 1}]


@pytest.mark.parametrize("db_type", ENGINES)
async def test_timeout_inside_a_transaction_rolls_back(api: Api, db_type: str) -> None:
    cid = await api.register(db_type)
    marker = unique("txslow")
    response = await api.transaction(
        cid, [{"sql": "SELECT 1"}, {"sql": sleep_sql(db_type, 5, marker)}], timeoutSeconds=1
    )
    assert response.status_code == 504, response.text
    await asyncio.sleep(1.0)
    assert await running_statements(db_type, marker) == 0
    assert api.snapshot(cid).checked_out == 0


async def _asgi_post_then_disconnect(api: Api, path: str, body: dict[str, Any],
                                     hang_up_after: float) -> list[dict[str, Any]]:
    """Drive the ASGI app directly: send the request, then ``http.disconnect``."""
    payload = json.dumps(body).encode()
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": payload, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(hang_up_after)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": [(b"content-type", b"application/json"),
                                     (b"content-length", str(len(payload)).encode()),
                                     (b"host", b"testserver")],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 80), "state": {},
    }
    await api.app(scope, receive, send)
    return sent


@pytest.mark.parametrize("hang_up_after", [0.0, 1.0], ids=["at-once", "after-1s"])
@pytest.mark.parametrize("db_type", ENGINES)
async def test_client_disconnect_cancels_the_statement(
    api: Api, db_type: str, hang_up_after: float
) -> None:
    # At once: before the route's watcher starts (it starts after WATCH_AFTER_SECONDS).
    cid = await api.register(db_type)
    marker = unique("gone")
    task = asyncio.create_task(_asgi_post_then_disconnect(
        api, f"{BASE}/{cid}/query", {"sql": sleep_sql(db_type, 10, marker)},
        hang_up_after=hang_up_after))
    if hang_up_after:
        assert await wait_until(lambda: _running(db_type, marker), within=3.0)
    started = time.monotonic()
    sent = await asyncio.wait_for(task, timeout=5.0)  # the statement alone would take 10 s
    assert sent[0]["status"] == 499
    assert await wait_until(lambda: _gone(db_type, marker), within=2.0)
    assert time.monotonic() - started < 3.0
    snap = api.snapshot(cid)
    assert snap.checked_out == 0  # back in the pool (or discarded), never left lent out
    assert await api.rows(cid, "SELECT 1 AS ok") == [{"ok": 1}]


async def _running(db_type: str, marker: str) -> bool:
    return await running_statements(db_type, marker) == 1


async def _gone(db_type: str, marker: str) -> bool:
    return await running_statements(db_type, marker) == 0
