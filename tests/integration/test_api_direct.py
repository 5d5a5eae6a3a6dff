"""``DirectRoute`` (``/query`` without FastAPI's generic request handling) answers every
request exactly as FastAPI's own handler does: the same request with the direct path
switched off is the reference, errors and successes alike."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Request
from fastapi.routing import APIRoute

import app.api.direct as direct_module
from app.api.routes import ROUTERS
from app.main import create_app
from tests.support.api import ADMIN, API_KEY, BASE, make_settings, running_app
from tests.support.query import connection_body

pytestmark = [pytest.mark.postgresql]

JSON = "application/json"
GOOD = json.dumps({"sql": "SELECT :a AS a, 'x' AS b", "params": {"a": 5}}).encode()

# (name, path suffix after the id, body bytes, content type or None)
CASES: list[tuple[str, str, bytes, str | None]] = [
    ("good", "", GOOD, JSON),
    ("good, content type with charset", "", GOOD, "application/json; charset=utf-8"),
    ("good, content type in capitals", "", GOOD, "Application/JSON"),
    ("good, +json subtype", "", GOOD, "application/vnd.api+json"),
    ("good, unknown field ignored", "", b'{"sql": "SELECT 1 AS one", "foo": [1]}', JSON),
    ("good, maxRows as a numeric string", "", b'{"sql": "SELECT 1 AS one", "maxRows": "5"}',
     JSON),
    ("good, row format array", "", b'{"sql": "SELECT 1 AS one", "rowFormat": "array"}', JSON),
    ("good, positional params", "", b'{"sql": "SELECT $1::int AS one", "params": [3]}', JSON),
    ("good, utf-16 body", "", GOOD.decode().encode("utf-16"), JSON),
    ("NaN parameter", "", b'{"sql": "SELECT :a::float AS a", "params": {"a": NaN}}', JSON),
    ("not JSON", "", b'{"sql": ', JSON),
    ("empty body", "", b"", JSON),
    ("empty object", "", b"{}", JSON),
    ("array body", "", b'["SELECT 1"]', JSON),
    ("string body", "", b'"SELECT 1"', JSON),
    ("empty sql", "", b'{"sql": ""}', JSON),
    ("sql not a string", "", b'{"sql": 123}', JSON),
    ("params a string", "", b'{"sql": "SELECT 1", "params": "x"}', JSON),
    ("maxRows 0", "", b'{"sql": "SELECT 1", "maxRows": 0}', JSON),
    ("maxRows not a number", "", b'{"sql": "SELECT 1", "maxRows": "many"}', JSON),
    ("negative timeout", "", b'{"sql": "SELECT 1", "timeoutSeconds": -1}', JSON),
    ("unknown row format", "", b'{"sql": "SELECT 1", "rowFormat": "xml"}', JSON),
    ("unknown target", "", b'{"sql": "SELECT 1", "target": "nearest"}', JSON),
    ("two statements", "", b'{"sql": "SELECT 1; SELECT 2"}', JSON),
    ("missing parameter", "", b'{"sql": "SELECT :a AS a", "params": {}}', JSON),
    ("database error", "", b'{"sql": "SELECT * FROM no_such_table_x"}', JSON),
    ("text/plain", "", GOOD, "text/plain"),
    ("no content type", "", GOOD, None),
    ("id 0", "0", GOOD, JSON),
    ("id negative", "-3", GOOD, JSON),
    ("id not a number", "abc", GOOD, JSON),
    ("id too large", str(2**63), GOOD, JSON),
    ("id unknown", "999999999", GOOD, JSON),
]
DIRECT = {
    "good", "good, content type in capitals", "good, unknown field ignored",
    "good, maxRows as a numeric string", "good, row format array", "good, positional params",
    "two statements", "missing parameter", "database error", "id unknown",
}


def _comparable(response: httpx.Response) -> tuple[int, Any, str | None]:
    """Status, body (timings dropped) and content type of one answer."""
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    if isinstance(body, dict) and isinstance(body.get("data"), dict):
        body["data"].pop("durationMs", None)
    return response.status_code, body, response.headers.get("content-type")


@pytest.fixture
async def client(registry_url: str) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    """The app and the id of a PostgreSQL registration."""
    async with running_app(make_settings(registry_url)) as http:
        response = await http.post(BASE, json=connection_body("postgresql"), headers=ADMIN)
        assert response.status_code == 201, response.text
        yield http, int(response.json()["data"]["id"])


async def _post(http: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str], *,
                generic: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, bool]:
    """The comparable answer, and whether the direct path served it. ``generic``: with no
    direct path (FastAPI's handler for every request), the reference."""
    served: list[bool] = []
    original = direct_module._Plan.arguments

    async def arguments(plan: direct_module._Plan, request: Request) -> dict[str, Any] | None:
        found = None if generic else await original(plan, request)
        served.append(found is not None)
        return found

    with monkeypatch.context() as patch:
        patch.setattr(direct_module._Plan, "arguments", arguments)
        answer = _comparable(await http.post(url, content=body, headers=headers))
    return answer, served == [True]


async def test_direct_route_answers_as_fastapi_does(
    client: tuple[httpx.AsyncClient, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    http, cid = client
    for name, suffix, body, content_type in CASES:
        headers = {"Authorization": f"Bearer {API_KEY}", "X-Request-ID": f"case-{len(name)}"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = f"{BASE}/{suffix or cid}/query"
        answer, served = await _post(http, url, body, headers, generic=False,
                                     monkeypatch=monkeypatch)
        reference, _ = await _post(http, url, body, headers, generic=True,
                                   monkeypatch=monkeypatch)
        assert answer == reference, name
        # Served directly: exactly the requests that pass FastAPI's checks with a plain JSON
        # content type (the endpoint's own refusals included).
        if name != "NaN parameter":  # either way: the answers are compared above
            assert served == (name in DIRECT), name
        if name.startswith("good"):
            assert answer[0] == 200, (name, answer)
        elif name not in ("database error", "id unknown", "NaN parameter"):
            assert answer[0] == 422, (name, answer)


def test_only_the_query_route_is_served_directly() -> None:
    """The plan exists for ``/query`` (a FastAPI upgrade that breaks it fails here, not
    silently in the bench) and for no other route."""
    planned = {
        (route.path, *sorted(route.methods))
        for router in ROUTERS
        for route in router.routes
        if isinstance(route, APIRoute) and direct_module._plan(route) is not None
    }
    assert planned == {(f"{BASE}/{{connection_id}}/query", "POST")}


async def test_a_client_gone_before_its_body_arrives_gets_fastapis_answer_no_error(
    registry_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A body cut off by a disconnect (Content-Length announced, the client gone) is no
    error of ours: the direct path leaves it to FastAPI's handler, which refuses it like
    for any unreadable body, and nothing reaches the log as an ERROR or escapes the app."""
    app = create_app(make_settings(registry_url), configure_logs=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            created = await http.post(BASE, json=connection_body("postgresql"), headers=ADMIN)
            assert created.status_code == 201, created.text
            cid = int(created.json()["data"]["id"])
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": "POST", "scheme": "http", "path": f"{BASE}/{cid}/query",
            "raw_path": f"{BASE}/{cid}/query".encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(GOOD)).encode()),
                        (b"authorization", f"Bearer {API_KEY}".encode())],
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }  # fmt: skip
        with caplog.at_level(logging.INFO):
            await app(scope, receive, send)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [422], sent  # FastAPI's 400, in our envelope
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
