"""Registering a small cluster: ``replicas`` and ``maxReplicaLagSeconds`` on POST and PATCH,
passwords encrypted and never shown, the host allowlist on every node."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text

from app.registry.crypto import SecretBox
from app.registry.db import create_registry_engine, create_sessionmaker
from app.registry.repository import ConnectionRepository
from tests.support.api import (
    ADMIN,
    BASE,
    PASSWORD,
    assert_error,
    connection_body,
    make_settings,
    running_app,
)

REPLICA_PASSWORD = "replica-Pw-Secret-91c2"


@pytest.fixture
async def client(registry_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(registry_url, allowed_hosts="127.0.0.0/8")
    async with running_app(settings) as c:
        yield c


async def _register(client: httpx.AsyncClient, **body: object) -> dict[str, object]:
    response = await client.post(BASE, json=connection_body(**body), headers=ADMIN)
    assert response.status_code == 201, response.text
    data: dict[str, object] = response.json()["data"]
    return data


async def test_replicas_are_stored_and_shown_without_passwords(
    client: httpx.AsyncClient,
) -> None:
    data = await _register(
        client,
        replicas=[{"host": "127.0.0.2", "weight": 3},
                  {"host": "127.0.0.3", "port": 6543, "username": "reader",
                   "password": REPLICA_PASSWORD}],
        maxReplicaLagSeconds=2.5,
    )
    assert data["replicas"] == [
        {"host": "127.0.0.2", "port": 5432, "weight": 3, "username": None, "hasPassword": False},
        {"host": "127.0.0.3", "port": 6543, "weight": 1, "username": "reader",
         "hasPassword": True},
    ]
    assert data["maxReplicaLagSeconds"] == 2.5
    listed = await client.get(BASE, headers=ADMIN)
    for response in (listed, await client.get(f"{BASE}/{data['id']}", headers=ADMIN)):
        assert REPLICA_PASSWORD not in response.text and PASSWORD not in response.text


async def test_replica_passwords_are_encrypted_and_resolved(registry_url: str) -> None:
    settings = make_settings(registry_url)
    async with running_app(settings) as c:
        data = await _register(c, replicas=[{"host": "127.0.0.2", "password": REPLICA_PASSWORD},
                                            {"host": "127.0.0.3"}])
    engine = create_registry_engine(registry_url)
    try:
        async with engine.connect() as conn:
            raw = (await conn.execute(text(
                "SELECT replicas FROM external_db_connections WHERE id = :id"),
                {"id": data["id"]})).scalar_one()
        assert REPLICA_PASSWORD not in str(raw)
        repo = ConnectionRepository(create_sessionmaker(engine),
                                    SecretBox(settings.encryption_keys))
        config = await repo.load_config(int(str(data["id"])))
    finally:
        await engine.dispose()
    nodes = config.nodes()
    assert [n.node for n in nodes] == ["node0", "node1", "node2"]
    assert [n.password.get_secret_value() for n in nodes] == [
        PASSWORD, REPLICA_PASSWORD, PASSWORD]
    assert all(n.replicas == () for n in nodes)
    assert REPLICA_PASSWORD not in repr(config) and PASSWORD not in repr(config)


async def test_the_allowlist_applies_to_each_replica(client: httpx.AsyncClient) -> None:
    response = await client.post(
        BASE, json=connection_body(replicas=[{"host": "10.1.2.3"}]), headers=ADMIN)
    assert_error(response, 403, "HOST_NOT_ALLOWED")
    data = await _register(client)
    response = await client.patch(f"{BASE}/{data['id']}", headers=ADMIN, json={
        "replicas": [{"host": "10.1.2.3", "password": "x"}]})
    assert_error(response, 403, "HOST_NOT_ALLOWED")


async def test_a_new_replica_address_needs_a_password(client: httpx.AsyncClient) -> None:
    data = await _register(client, replicas=[{"host": "127.0.0.2", "password": REPLICA_PASSWORD}])
    url = f"{BASE}/{data['id']}"
    # A new address would be sent the stored password: refused without one.
    response = await client.patch(url, headers=ADMIN, json={"replicas": [{"host": "127.0.0.9"}]})
    body = assert_error(response, 422, "VALIDATION_ERROR")
    assert body["error"]["details"]["field"] == "password"
    # The known address keeps its own stored password when sent again without it.
    response = await client.patch(url, headers=ADMIN, json={
        "replicas": [{"host": "127.0.0.2", "weight": 5}, {"host": "127.0.0.9"}],
        "password": PASSWORD, "maxReplicaLagSeconds": None})
    assert response.status_code == 200, response.text
    replicas = response.json()["data"]["replicas"]
    assert [(r["host"], r["weight"], r["hasPassword"]) for r in replicas] == [
        ("127.0.0.2", 5, True), ("127.0.0.9", 1, False)]
    assert response.json()["data"]["configVersion"] == data["configVersion"] + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"replicas": [{"host": "127.0.0.1"}]}, "replicas"),  # the registration's own address
        ({"replicas": [{"host": "127.0.0.2"}, {"host": "127.0.0.2"}]}, "replicas"),
        ({"replicas": [{"host": "127.0.0.2", "weight": 0}]}, "weight"),
        ({"maxReplicaLagSeconds": 0}, "maxReplicaLagSeconds"),
        ({"replicas": [{"host": "/tmp/sock"}]}, "host"),
    ],
)
async def test_bad_replicas_are_422(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    response = await client.post(BASE, json=connection_body(**body), headers=ADMIN)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert field in response.text, error
