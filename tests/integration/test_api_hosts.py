"""DBPOOL_ALLOWED_HOSTS on registration and on a PATCH that moves the host."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from app.errors import HostNotAllowed
from app.pools.allowlist import ensure_host_allowed
from app.settings import Settings
from tests.support.api import (
    ADMIN,
    BASE,
    assert_error,
    connection_body,
    make_settings,
    running_app,
)

RULES = "127.0.0.0/8,::1/128,db.example.com,*.corp.example"


@pytest.fixture
async def client(registry_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(make_settings(registry_url, allowed_hosts=RULES)) as c:
        yield c


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.9.9.9",
        "::1",
        "db.example.com",
        "DB.Example.COM.",
        "a.corp.example",
        "a.b.corp.example",
        "localhost",
    ],
)
async def test_allowed_hosts_register(client: httpx.AsyncClient, host: str) -> None:
    response = await client.post(BASE, json=connection_body(host=host), headers=ADMIN)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "::2",
        "other.example.com",
        "corp.example",
        "evil-corp.example",
        "db.example.com.evil.test",
    ],
)
async def test_other_hosts_are_403(client: httpx.AsyncClient, host: str) -> None:
    response = await client.post(BASE, json=connection_body(host=host), headers=ADMIN)
    body = assert_error(response, 403, "HOST_NOT_ALLOWED")
    assert body["error"]["details"]["host"] == host


async def test_patch_to_a_disallowed_host_is_403(client: httpx.AsyncClient) -> None:
    created = await client.post(BASE, json=connection_body(), headers=ADMIN)
    url = f"{BASE}/{created.json()['data']['id']}"
    moved = await client.patch(url, json={"host": "10.1.2.3", "password": "x"}, headers=ADMIN)
    assert_error(moved, 403, "HOST_NOT_ALLOWED")
    assert (await client.get(url, headers=ADMIN)).json()["data"]["host"] == "127.0.0.1"
    allowed = await client.patch(
        url, json={"host": "db.example.com", "password": "x"}, headers=ADMIN
    )
    assert allowed.status_code == 200


async def test_names_are_not_resolved_without_network_rules() -> None:
    # Only name rules: an unlisted name is refused without a DNS lookup (no traffic).
    rules = Settings(allowed_hosts="db.example.com").allowed_host_rules()
    with pytest.raises(HostNotAllowed):
        await ensure_host_allowed("localhost", rules)


async def test_a_name_resolving_outside_the_networks_is_refused() -> None:
    # localhost resolves (from /etc/hosts) to loopback addresses only; 10/8 does not hold them.
    rules = Settings(allowed_hosts="10.0.0.0/8").allowed_host_rules()
    with pytest.raises(HostNotAllowed):
        await ensure_host_allowed("localhost", rules)


async def test_no_rules_allow_any_host() -> None:
    await ensure_host_allowed("anything.example", [])
