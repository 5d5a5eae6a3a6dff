"""Bearer auth: 401 without or with a wrong token, 403 for the query key on registry writes."""

from __future__ import annotations

import logging

import httpx
import pytest

from tests.support.api import (
    ADMIN,
    ADMIN_KEY,
    API_KEY,
    BASE,
    QUERY,
    assert_error,
    connection_body,
    make_settings,
    running_app,
)


async def _registered_id(client: httpx.AsyncClient) -> int:
    response = await client.post(BASE, json=connection_body(), headers=ADMIN)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {API_KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {ADMIN_KEY}x"},
    ],
    ids=["missing", "wrong", "not-bearer", "empty", "admin-plus-one"],
)
async def test_missing_or_wrong_token_is_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    cid = await _registered_id(client)
    requests = [
        ("GET", BASE),
        ("GET", f"{BASE}/{cid}"),
        ("POST", BASE),
        ("PATCH", f"{BASE}/{cid}"),
        ("DELETE", f"{BASE}/{cid}"),
    ]
    for method, url in requests:
        response = await client.request(method, url, json=connection_body(), headers=headers)
        assert_error(response, 401, "UNAUTHORIZED")
        assert response.headers["WWW-Authenticate"] == "Bearer"
    still_there = await client.get(f"{BASE}/{cid}", headers=QUERY)
    assert still_there.status_code == 200


async def test_query_key_reads_but_cannot_write(client: httpx.AsyncClient) -> None:
    cid = await _registered_id(client)
    assert (await client.get(BASE, headers=QUERY)).status_code == 200
    assert (await client.get(f"{BASE}/{cid}", headers=QUERY)).status_code == 200
    writes = [
        ("POST", BASE, connection_body()),
        ("PATCH", f"{BASE}/{cid}", {"maxConnections": 3}),
        ("DELETE", f"{BASE}/{cid}", None),
    ]
    for method, url, body in writes:
        response = await client.request(method, url, json=body, headers=QUERY)
        assert_error(response, 403, "FORBIDDEN")
    unchanged = (await client.get(f"{BASE}/{cid}", headers=QUERY)).json()["data"]
    assert unchanged["maxConnections"] == 10


async def test_unauthenticated_caller_learns_nothing_from_validation(
    client: httpx.AsyncClient,
) -> None:
    # Auth is checked before the body: a bad body without a token is 401, not 422.
    response = await client.post(BASE, json={"port": "x"})
    assert_error(response, 401, "UNAUTHORIZED")


OPEN_PATHS = {"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


async def test_every_other_route_needs_a_token(client: httpx.AsyncClient) -> None:
    # Each route takes its auth as a parameter (one dependency node on the hot path), so a
    # route that forgot it would be open: walk every documented one.
    cid = await _registered_id(client)
    spec = (await client.get("/openapi.json")).json()
    checked = 0
    for path, operations in spec["paths"].items():
        if path in OPEN_PATHS:
            continue
        url = path.format(connection_id=cid, table="items")
        for method in operations:
            response = await client.request(method, url, json={"sql": "SELECT 1"})
            assert_error(response, 401, "UNAUTHORIZED")
            checked += 1
    assert checked >= 12


async def test_probes_and_docs_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert (await client.get(path)).status_code == 200, path


async def test_auth_off_allows_all_and_warns(
    registry_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    settings = make_settings(registry_url, api_key=None, admin_api_key=None)
    async with running_app(settings) as client:
        created = await client.post(BASE, json=connection_body())
        assert created.status_code == 201
        cid = created.json()["data"]["id"]
        assert (await client.delete(f"{BASE}/{cid}")).status_code == 200
    assert any("auth is OFF" in r.getMessage() for r in caplog.records)


async def test_only_query_key_set_refuses_writes(registry_url: str) -> None:
    settings = make_settings(registry_url, admin_api_key=None)
    async with running_app(settings) as client:
        assert (await client.get(BASE, headers=QUERY)).status_code == 200
        assert_error(
            await client.post(BASE, json=connection_body(), headers=QUERY), 403, "FORBIDDEN"
        )
