"""The HTTP frame: request ids, envelopes for 404/405/413/500, probes and OpenAPI docs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from tests.support.api import (
    ADMIN,
    BASE,
    PASSWORD,
    assert_error,
    connection_body,
    make_settings,
    running_app,
)

MIB = 1024 * 1024


async def test_request_id_is_taken_from_a_sane_caller_value(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": "wf-42.node:7_a-b"})
    assert response.headers["X-Request-ID"] == "wf-42.node:7_a-b"
    missing = await client.get(f"{BASE}/987654321", headers={**ADMIN, "X-Request-ID": "trace-1"})
    assert assert_error(missing, 404, "CONNECTION_NOT_FOUND")["requestId"] == "trace-1"


@pytest.mark.parametrize("offered", ["x" * 129, "has space", "semi;colon", "", "ä"])
async def test_insane_request_id_is_replaced(client: httpx.AsyncClient, offered: str) -> None:
    response = await client.get("/healthz", headers={"X-Request-ID": offered.encode()})
    generated = response.headers["X-Request-ID"]
    assert generated != offered and 0 < len(generated) <= 128


async def test_every_response_gets_a_fresh_id(client: httpx.AsyncClient) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


@pytest.mark.parametrize("path", ["/nope", "/api/nope", f"{BASE}/1/nope/deeper"])
async def test_unknown_route_is_404_envelope(client: httpx.AsyncClient, path: str) -> None:
    assert_error(await client.get(path, headers=ADMIN), 404, "NOT_FOUND")


async def test_wrong_method_is_405_envelope(client: httpx.AsyncClient) -> None:
    response = await client.put(BASE, json={}, headers=ADMIN)
    assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert {"GET", "POST"} & set(response.headers["Allow"].replace(" ", "").split(","))
    assert_error(await client.post("/healthz"), 405, "METHOD_NOT_ALLOWED")


async def test_oversized_body_by_content_length_is_413(client: httpx.AsyncClient) -> None:
    body = connection_body(description="x" * (MIB + 1))
    response = await client.post(BASE, json=body, headers=ADMIN)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert PASSWORD not in response.text


async def test_oversized_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    chunks_sent = 0

    async def stream() -> AsyncIterator[bytes]:
        nonlocal chunks_sent
        for _ in range(40):  # 40 x 64 KiB = 2.5 MiB, with no Content-Length
            chunks_sent += 1
            yield b"x" * 65536

    response = await client.post(
        BASE, content=stream(), headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_body_just_under_the_limit_is_read(client: httpx.AsyncClient) -> None:
    body = connection_body(description="x" * 900)
    assert (await client.post(BASE, json=body, headers=ADMIN)).status_code == 201


async def test_unhandled_exception_is_500_envelope_logged_with_request_id(
    registry_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(registry_url), configure_logs=False)

    async def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app.add_api_route("/boom", boom)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            response = await client.get("/boom", headers={"X-Request-ID": "boom-1"})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert body["requestId"] == "boom-1"
    assert "secret internals" not in response.text and "Traceback" not in response.text
    logged = [
        r for r in caplog.records if r.exc_info and getattr(r, "request_id", None) == "boom-1"
    ]
    assert logged, "the traceback must be logged with the request id"


async def test_healthz_and_readyz(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


async def test_readyz_503_when_schema_not_migrated(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path / 'empty.sqlite3'}")
    async with running_app(settings) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert "dbpool migrate" in response.json()["reason"]
        assert (await client.get("/healthz")).status_code == 200


async def test_readyz_503_when_registry_unreachable() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connect is refused at once.
    settings = make_settings("postgresql+asyncpg://dbpool_test@127.0.0.1:9/nowhere")
    async with running_app(settings) as client:
        response = await client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["reason"].startswith("registry database unreachable")
        assert response.headers["Retry-After"] == "5"


async def test_openapi_documents_routes_and_examples(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in (BASE, f"{BASE}/{{connection_id}}"):
        for operation in spec["paths"][path].values():
            assert operation["summary"] and operation["description"]
    schemas = spec["components"]["schemas"]
    assert schemas["ConnectionCreate"]["examples"][0]["dbType"] == "postgresql"
    assert "password" not in schemas["ConnectionPublic"]["properties"]
    assert "password" in schemas["ConnectionCreate"]["properties"]
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
    docs = await client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


async def test_fixed_paths_are_not_taken_for_ids(client: httpx.AsyncClient) -> None:
    # Router order: /pool-status must reach its own route, not /{connection_id} (422).
    response = await client.get(f"{BASE}/pool-status", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["success"] is True


async def test_readyz_asks_the_registry_at_most_once_a_second(registry_url: str) -> None:
    from sqlalchemy import event

    from app.api.routes.health import READY_CACHE_SECONDS

    app = create_app(make_settings(registry_url), configure_logs=False)
    async with app.router.lifespan_context(app):
        statements: list[str] = []
        event.listen(app.state.readiness.engine.sync_engine, "before_cursor_execute",
                     lambda *args: statements.append(args[2]))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answers = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
            assert {r.status_code for r in answers} == {200}
            asked = len(statements)
            assert asked >= 1
            for _ in range(10):
                assert (await client.get("/readyz")).status_code == 200
            assert len(statements) == asked, "a probe within the second asked the registry again"
            await asyncio.sleep(READY_CACHE_SECONDS + 0.1)
            assert (await client.get("/readyz")).status_code == 200
            assert len(statements) > asked, "the cached answer never expired"
