"""TLS modes against a real TLS PostgreSQL and a real TLS MariaDB whose certificates a test
CA signed for ``localhost``: verify-full accepts the right name and refuses another,
verify-ca checks the chain (the registration's CA, else the system store), require checks
nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType
from app.pools.tls import mysql_ssl
from tests.support.query import Api, api, connection_body, query_registry
from tests.support.tls_servers import TlsServer, ca_pem, tls_mariadb, tls_postgres

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]

BASE = "/api/external-db-connections"
Server = tuple[str, TlsServer]  # (dbType, the running server)
ENCRYPTED = {
    "postgresql": "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    "mariadb": "SELECT VARIABLE_VALUE <> '' FROM information_schema.SESSION_STATUS "
    "WHERE VARIABLE_NAME = 'Ssl_cipher'",
}
LOGIN = {
    "postgresql": {"database": "postgres", "username": "postgres"},
    "mariadb": {"database": "mysql", "username": "root", "password": ""},
}


@pytest.fixture(scope="module", params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    start = tls_postgres if request.param == "postgresql" else tls_mariadb
    with start() as running:
        yield request.param, running


async def _query(api: Api, server: Server, host: str,
                 **options: Any) -> dict[str, Any]:
    db_type, running = server
    body = connection_body(db_type, host=host, port=running.port, options=options,
                           **LOGIN[db_type])
    created = await api.client.post(BASE, json=body)
    assert created.status_code == 201, created.text
    cid = created.json()["data"]["id"]
    response = await api.query(cid, ENCRYPTED[db_type], rowFormat="array")
    result: dict[str, Any] = response.json()
    result["status"] = response.status_code
    if response.status_code == 200:
        result["encrypted"] = [[bool(v) for v in row] for row in result["data"]["rows"]]
    return result


async def test_verify_full_accepts_the_certificate_name(api: Api, server: Server) -> None:
    result = await _query(api, server, "localhost", ssl="verify-full", caCert=server[1].ca_pem)
    assert result["status"] == 200, result
    assert result["encrypted"] == [[True]]


async def test_verify_full_refuses_another_name(api: Api, server: Server) -> None:
    # The same server through 127.0.0.1: the certificate names only localhost.
    result = await _query(api, server, "127.0.0.1", ssl="verify-full", caCert=server[1].ca_pem)
    assert result["status"] == 503, result
    assert result["error"]["code"] == "DB_UNAVAILABLE"
    assert "certificate" in result["error"]["message"].lower(), result


async def test_verify_ca_checks_the_chain_not_the_name(api: Api, server: Server) -> None:
    ok = await _query(api, server, "127.0.0.1", ssl="verify-ca", caCert=server[1].ca_pem)
    assert ok["status"] == 200 and ok["encrypted"] == [[True]], ok
    other = await _query(api, server, "127.0.0.1", ssl="verify-ca", caCert=server[1].other_ca_pem)
    assert other["status"] == 503, other
    # No CA of its own: the system store, which does not hold the test CA (and never
    # asyncpg's ~/.postgresql/root.crt lookup, which would fail with a file error instead).
    system = await _query(api, server, "localhost", ssl="verify-full")
    assert system["status"] == 503, system
    assert "certificate verify failed" in system["error"]["message"], system


async def test_require_encrypts_without_checking(api: Api, server: Server) -> None:
    result = await _query(api, server, "127.0.0.1", ssl="require")
    assert result["status"] == 200 and result["encrypted"] == [[True]], result


async def test_ca_cert_must_be_pem_and_changing_it_needs_the_password(api: Api) -> None:
    bad = connection_body("postgresql", options={"ssl": "verify-full", "caCert": "not a cert"})
    refused = await api.client.post(BASE, json=bad)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["details"]["errors"][0]["loc"] == [
        "body", "options", "caCert"]
    first, second = ca_pem("first CA"), ca_pem("second CA")
    body = connection_body("postgresql", options={"ssl": "verify-full", "caCert": first})
    created = await api.client.post(BASE, json=body)
    assert created.status_code == 201, created.text
    assert created.json()["data"]["options"]["caCert"] == first
    url = f"{BASE}/{created.json()['data']['id']}"
    change: dict[str, Any] = {"options": {"ssl": "verify-full", "caCert": second}}
    assert (await api.client.patch(url, json=change)).status_code == 422
    assert (await api.client.patch(url, json={**change, "password": "again"})).status_code == 200


def test_mysql_contexts_check_what_the_mode_says() -> None:
    def config(**options: Any) -> ConnectionConfig:
        return ConnectionConfig(id=1, name="m", db_type=DbType.MARIADB, host="db.internal",
                                port=3306, database="d", username="u",
                                password=SecretStr("p"), options=options)

    assert mysql_ssl(config()) is None and mysql_ssl(config(ssl="prefer")) is None
    full = mysql_ssl(config(ssl="verify-full"))
    assert full is not None and full.check_hostname and full.verify_mode.name == "CERT_REQUIRED"
    ca = mysql_ssl(config(ssl="verify-ca"))
    assert ca is not None and not ca.check_hostname and ca.verify_mode.name == "CERT_REQUIRED"
    require = mysql_ssl(config(ssl="require"))
    assert require is not None and require.verify_mode.name == "CERT_NONE"
