"""The registry endpoints end to end over HTTP, against SQLite and PostgreSQL registries."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest

from tests.support.api import (
    ADMIN,
    BASE,
    PASSWORD,
    QUERY,
    assert_error,
    connection_body,
)


async def _create(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(BASE, json=connection_body(**overrides), headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_create_read_list_patch_delete_cycle(client: httpx.AsyncClient) -> None:
    body = connection_body(description="reporting replica", options={"ssl": "disable"})
    created = await client.post(BASE, json=body, headers=ADMIN)
    assert created.status_code == 201
    envelope = created.json()
    assert envelope["success"] is True and envelope["message"]
    data = envelope["data"]
    assert data["name"] == body["name"] and data["dbType"] == "postgresql"
    assert data["port"] == 5432 and data["maxConnections"] == 10 and data["minConnections"] == 0
    assert data["isActive"] is True and data["readOnly"] is False
    assert data["options"] == {"ssl": "disable"} and data["configVersion"] == 1
    assert not {"password", "passwordEncrypted"} & set(data)
    cid = data["id"]

    one = await client.get(f"{BASE}/{cid}", headers=QUERY)
    assert one.status_code == 200 and one.json()["data"] == data

    listed = await client.get(BASE, params={"limit": 1000}, headers=QUERY)
    page = listed.json()["data"]
    assert cid in [item["id"] for item in page["items"]]
    assert page["total"] >= len(page["items"]) >= 1

    patched = await client.patch(f"{BASE}/{cid}", json={"maxConnections": 20}, headers=ADMIN)
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["maxConnections"] == 20
    assert patched.json()["data"]["configVersion"] > data["configVersion"]

    deleted = await client.delete(f"{BASE}/{cid}", headers=ADMIN)
    assert deleted.status_code == 200 and deleted.json()["success"] is True
    assert_error(await client.get(f"{BASE}/{cid}", headers=QUERY), 404, "CONNECTION_NOT_FOUND")


@pytest.mark.parametrize(("db_type", "port"), [("mysql", 3306), ("mariadb", 3306)])
async def test_port_defaults_by_type(client: httpx.AsyncClient, db_type: str, port: int) -> None:
    assert (await _create(client, dbType=db_type))["port"] == port


async def test_empty_password_and_explicit_port_are_accepted(client: httpx.AsyncClient) -> None:
    data = await _create(client, password="", port=6543, host="db-1.internal.example")
    assert data["port"] == 6543 and data["host"] == "db-1.internal.example"


async def test_ipv6_host_is_accepted(client: httpx.AsyncClient) -> None:
    assert (await _create(client, host="::1"))["host"] == "::1"


INVALID_BODIES: list[tuple[str, dict[str, Any], str]] = [
    ("db type", {"dbType": "oracle"}, "dbType"),
    ("port zero", {"port": 0}, "port"),
    ("port too big", {"port": 65536}, "port"),
    ("port as text", {"port": "5432"}, "port"),
    ("max zero", {"maxConnections": 0}, "maxConnections"),
    ("max too big", {"maxConnections": 1001}, "maxConnections"),
    ("min negative", {"minConnections": -1}, "minConnections"),
    ("min above max", {"minConnections": 5, "maxConnections": 2}, "minConnections"),
    ("connect timeout zero", {"connectionTimeout": 0}, "connectionTimeout"),
    ("connect timeout huge", {"connectionTimeout": 3601}, "connectionTimeout"),
    ("query timeout negative", {"queryTimeout": -1}, "queryTimeout"),
    ("name empty", {"name": ""}, "name"),
    ("name too long", {"name": "n" * 101}, "name"),
    ("name blank", {"name": "   "}, "name"),
    ("name control char", {"name": "a\nb"}, "name"),
    ("host socket path", {"host": "/var/run/postgresql"}, "host"),
    ("host with space", {"host": "db host"}, "host"),
    ("host with NUL", {"host": "db\x00"}, "host"),
    ("host url", {"host": "http://db"}, "host"),
    ("host empty", {"host": ""}, "host"),
    ("host leading hyphen", {"host": "-db.example"}, "host"),
    ("host bad ip", {"host": "999.1.1.1"}, "host"),
    ("host with port", {"host": "db:5432"}, "host"),
    ("database empty", {"database": ""}, "database"),
    ("database too long", {"database": "d" * 129}, "database"),
    ("username empty", {"username": ""}, "username"),
    ("username control char", {"username": "u\x07"}, "username"),
    ("password not text", {"password": 12345}, "password"),
    ("options not object", {"options": ["ssl"]}, "options"),
    ("options unknown key", {"options": {"unix_socket": "/run/x.sock"}}, "options.unix_socket"),
    ("options bad ssl mode", {"options": {"ssl": "maybe"}}, "options.ssl"),
    ("is active not bool", {"isActive": "yes"}, "isActive"),
    ("unknown field", {"passwordEncrypted": "x"}, "passwordEncrypted"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "field"), INVALID_BODIES, ids=[c[0] for c in INVALID_BODIES]
)
async def test_invalid_create_is_422_naming_the_field(
    client: httpx.AsyncClient, case: str, overrides: dict[str, Any], field: str
) -> None:
    response = await client.post(BASE, json=connection_body(**overrides), headers=ADMIN)
    body = assert_error(response, 422, "VALIDATION_ERROR")
    problems = body["error"]["details"]["errors"]
    assert ["body", *field.split(".")] in [p["loc"] for p in problems], problems
    assert all(set(p) == {"loc", "msg", "type"} for p in problems)
    assert PASSWORD not in response.text


@pytest.mark.parametrize("missing", ["name", "dbType", "host", "database", "username", "password"])
async def test_missing_required_field_is_422(client: httpx.AsyncClient, missing: str) -> None:
    body = connection_body()
    del body[missing]
    response = await client.post(BASE, json=body, headers=ADMIN)
    problems = assert_error(response, 422, "VALIDATION_ERROR")["error"]["details"]["errors"]
    assert ["body", missing] in [p["loc"] for p in problems]


async def test_malformed_json_is_422_without_echo(client: httpx.AsyncClient) -> None:
    raw = '{"password": "' + PASSWORD + '", "name": '
    response = await client.post(
        BASE, content=raw, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert PASSWORD not in response.text


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", "99999999999999999999"])
async def test_bad_path_id_is_422(client: httpx.AsyncClient, bad_id: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, f"{BASE}/{bad_id}", json={}, headers=ADMIN)
        body = assert_error(response, 422, "VALIDATION_ERROR")
        assert ["path", "connection_id"] in [p["loc"] for p in body["error"]["details"]["errors"]]


async def test_unknown_id_is_404_for_every_method(client: httpx.AsyncClient) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(
            method, f"{BASE}/987654321", json={"maxConnections": 3}, headers=ADMIN
        )
        assert_error(response, 404, "CONNECTION_NOT_FOUND")


async def test_duplicate_name_is_409_on_create_and_patch(client: httpx.AsyncClient) -> None:
    first = await _create(client)
    second = await _create(client)
    again = await client.post(BASE, json=connection_body(name=first["name"]), headers=ADMIN)
    assert_error(again, 409, "CONNECTION_NAME_TAKEN")
    renamed = await client.patch(
        f"{BASE}/{second['id']}", json={"name": first["name"]}, headers=ADMIN
    )
    assert_error(renamed, 409, "CONNECTION_NAME_TAKEN")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "many"}, "limit"),
    ],
)
async def test_bad_paging_is_422(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get(BASE, params=params, headers=QUERY)
    problems = assert_error(response, 422, "VALIDATION_ERROR")["error"]["details"]["errors"]
    assert ["query", field] in [p["loc"] for p in problems]


async def test_paging_limits_items_not_total(client: httpx.AsyncClient) -> None:
    await _create(client)
    await _create(client)
    page = (await client.get(BASE, params={"limit": 1}, headers=QUERY)).json()["data"]
    assert len(page["items"]) == 1 and page["total"] >= 2
    beyond = (await client.get(BASE, params={"offset": 10**6}, headers=QUERY)).json()["data"]
    assert beyond["items"] == [] and beyond["total"] == page["total"]


async def test_patch_host_needs_password(client: httpx.AsyncClient) -> None:
    cid = (await _create(client))["id"]
    url = f"{BASE}/{cid}"
    refused = await client.patch(url, json={"host": "db2.example"}, headers=ADMIN)
    problems = assert_error(refused, 422, "VALIDATION_ERROR")["error"]["details"]["errors"]
    assert ["body", "password"] in [p["loc"] for p in problems]
    same_host = await client.patch(url, json={"host": "127.0.0.1"}, headers=ADMIN)
    assert same_host.status_code == 200
    moved = await client.patch(url, json={"host": "db2.example", "password": "new"}, headers=ADMIN)
    assert moved.status_code == 200 and moved.json()["data"]["host"] == "db2.example"


async def test_patch_validates_against_stored_values(client: httpx.AsyncClient) -> None:
    cid = (await _create(client, maxConnections=5, minConnections=2))["id"]
    url = f"{BASE}/{cid}"
    below_min = await client.patch(url, json={"maxConnections": 1}, headers=ADMIN)
    problems = assert_error(below_min, 422, "VALIDATION_ERROR")["error"]["details"]["errors"]
    assert ["body", "maxConnections"] in [p["loc"] for p in problems]
    for bad in ({"name": None}, {"port": 0}, {"host": "/tmp/sock", "password": "x"}, {"id": 7}):
        response = await client.patch(url, json=bad, headers=ADMIN)
        assert_error(response, 422, "VALIDATION_ERROR")
    unchanged = await client.patch(url, json={}, headers=ADMIN)
    assert unchanged.status_code == 200 and unchanged.json()["data"]["configVersion"] == 1
    cleared = await client.patch(url, json={"description": None}, headers=ADMIN)
    assert cleared.status_code == 200 and cleared.json()["data"]["description"] is None


async def test_password_never_in_responses_or_debug_logs(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    created = await client.post(BASE, json=connection_body(), headers=ADMIN)
    cid = created.json()["data"]["id"]
    texts.append(created.text)
    for response in (
        await client.get(BASE, headers=QUERY),
        await client.get(f"{BASE}/{cid}", headers=QUERY),
        await client.patch(f"{BASE}/{cid}", json={"password": PASSWORD + "2"}, headers=ADMIN),
        await client.patch(f"{BASE}/{cid}", json={"password": PASSWORD, "port": 0}, headers=ADMIN),
        await client.post(BASE, json=connection_body(port="x"), headers=ADMIN),
        await client.post(BASE, json=connection_body(password=[PASSWORD]), headers=ADMIN),
        await client.delete(f"{BASE}/{cid}", headers=ADMIN),
    ):
        texts.append(response.text)
        texts.append(str(response.headers))
    assert caplog.records, "DEBUG capture saw nothing: the check would be vacuous"
    for text in [*texts, caplog.text]:
        assert PASSWORD not in text


RACES = 25  # bounded: each round is one create and two racing requests


async def test_patch_racing_delete_ends_in_404_never_500(client: httpx.AsyncClient) -> None:
    # Found by schemathesis: a PATCH whose row a DELETE removed between its read and its write
    # was a 500 (SQLAlchemy's StaleDataError). Either request may win; the loser says 404.
    outcomes: set[tuple[int, int]] = set()
    for round_ in range(RACES):
        cid = (await _create(client))["id"]
        change = {"maxConnections": 3 + round_ % 5, "description": f"round {round_}"}
        patch, delete = await asyncio.gather(
            client.patch(f"{BASE}/{cid}", json=change, headers=ADMIN),
            client.delete(f"{BASE}/{cid}", headers=ADMIN),
        )
        assert delete.status_code == 200, delete.text
        if patch.status_code != 200:
            assert_error(patch, 404, "CONNECTION_NOT_FOUND")
        outcomes.add((patch.status_code, delete.status_code))
        assert_error(await client.get(f"{BASE}/{cid}", headers=QUERY), 404,
                     "CONNECTION_NOT_FOUND")  # fmt: skip
    assert outcomes <= {(200, 200), (404, 200)}


@pytest.mark.parametrize(
    ("change", "moved"),
    [
        ({"port": 6543}, "port"),
        ({"username": "someone_else"}, "username"),
        ({"database": "other_db"}, "database"),
        ({"dbType": "mariadb"}, "dbType"),
        ({"options": {"ssl": "require"}}, "options.ssl"),
        ({"options": {}}, "options.ssl"),  # back to the default, prefer
    ],
)
async def test_patch_sending_credentials_somewhere_new_needs_the_password(
    client: httpx.AsyncClient, change: dict[str, object], moved: str
) -> None:
    cid = (await _create(client, options={"ssl": "verify-full"}))["id"]
    url = f"{BASE}/{cid}"
    refused = await client.patch(url, json=change, headers=ADMIN)
    problems = assert_error(refused, 422, "VALIDATION_ERROR")["error"]["details"]["errors"]
    assert {"loc": ["body", "password"], "msg": f"required when {moved} changes",
            "type": "missing"} in problems
    accepted = await client.patch(url, json={**change, "password": "again"}, headers=ADMIN)
    assert accepted.status_code == 200, accepted.text


async def test_patch_keeping_or_tightening_where_credentials_go_needs_no_password(
    client: httpx.AsyncClient,
) -> None:
    cid = (await _create(client, options={"ssl": "require"}))["id"]
    url = f"{BASE}/{cid}"
    for change in ({"options": {"ssl": "verify-full"}}, {"maxConnections": 4},
                   {"host": "127.0.0.1", "port": 5432}):
        response = await client.patch(url, json=change, headers=ADMIN)
        assert response.status_code == 200, response.text
