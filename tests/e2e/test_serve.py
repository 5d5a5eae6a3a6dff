"""A real ``dbpool serve`` process: starts on the embedded SQLite registry, serves, stops on
SIGTERM promptly and cleanly, closes its pools, and never writes a password anywhere."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import httpx
import psutil
import pytest

from tests.e2e.conftest import StartServer
from tests.support import dbs

CONNECTIONS = "/api/external-db-connections"


def _register(http: httpx.Client, **overrides: Any) -> dict[str, Any]:
    body = {
        "name": f"e2e-{secrets.token_hex(4)}",
        "dbType": "postgresql",
        "host": dbs.PG_HOST,
        "port": dbs.PG_PORT,
        "database": dbs.PG_DATABASE,
        "username": dbs.PG_USER,
        "password": dbs.PG_PASSWORD,
        "maxConnections": 3,
    } | overrides
    response = http.post(CONNECTIONS, json=body)
    assert response.status_code == 201, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def _backends_on_ports(ports: list[int]) -> int:
    conn = await dbs.pg_admin()
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE client_addr = '127.0.0.1' AND client_port = ANY($1::int[])",
            ports,
        )
        return int(value)
    finally:
        await conn.close()


def _pg_client_ports(pid: int) -> list[int]:
    return [
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == dbs.PG_PORT
    ]


def test_fresh_serve_on_sqlite_answers_healthz_and_stops_on_sigterm(
    start_server: StartServer,
) -> None:
    server = start_server()
    with server.client() as http:
        assert http.get("/healthz").status_code == 200
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        listed = http.get(CONNECTIONS)
        assert listed.status_code == 200
        assert listed.json()["data"]["total"] == 0
    assert (server.workdir / "registry.sqlite3").exists(), "the SQLite registry was not created"

    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 10
    assert server.stopped_cleanly(), server.log()[-2000:]
    assert "auth is OFF" in server.log(), "no warning that auth is off"


@pytest.mark.postgresql
@pytest.mark.mariadb
def test_sigterm_with_live_pools_exits_and_closes_every_connection(
    start_server: StartServer,
) -> None:
    my_user, my_password = f"dbp_e2e_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(my_user, my_password)
    try:
        server = start_server()
        with server.client() as http:
            pg_id = _register(http)["id"]
            my_id = _register(
                http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
                database=dbs.MY_DATABASE, username=my_user, password=my_password,
            )["id"]
            for conn_id in (pg_id, my_id) * 3:
                response = http.post(f"{CONNECTIONS}/{conn_id}/query", json={"sql": "SELECT 1"})
                assert response.status_code == 200, response.text
        assert server.process is not None
        # Every e2e server's first connection has id 1, so application_name alone would count
        # other servers too: identify this process's backends by their client ports.
        ports = _pg_client_ports(server.process.pid)
        assert asyncio.run(_backends_on_ports(ports)) >= 1, "the PostgreSQL pool holds nothing"
        assert dbs.my_count(my_user) >= 1, "the MariaDB pool holds no connection"

        began = time.monotonic()
        server.stop()
        assert time.monotonic() - began < 10
        assert server.stopped_cleanly(), server.log()[-2000:]
        # The kernel would close the sockets of a killed process too: the log shows that the
        # pools themselves were closed, in order, before the process went.
        assert server.log().count("pool closed") >= 2, server.log()[-2000:]
        deadline = time.monotonic() + 5
        while asyncio.run(_backends_on_ports(ports)) or dbs.my_count(my_user):
            assert time.monotonic() < deadline, "database connections outlived the server"
            time.sleep(0.1)
    finally:
        dbs.drop_mysql_user(my_user)


@pytest.mark.mariadb
@pytest.mark.postgresql
def test_passwords_never_reach_responses_or_the_log(start_server: StartServer) -> None:
    server = start_server(env={"DBPOOL_LOG_LEVEL": "DEBUG"})
    wrong = f"wrong-{secrets.token_hex(8)}"  # the MariaDB server refuses it
    accepted = f"trusted-{secrets.token_hex(8)}"  # PostgreSQL trusts loopback: any works
    bodies: list[str] = []
    with server.client() as http:
        maria = _register(
            http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
            database=dbs.MY_DATABASE, username=dbs.MY_USER, password=wrong,
        )
        pg = _register(http, password=accepted)
        refused = http.post(f"{CONNECTIONS}/{maria['id']}/query", json={"sql": "SELECT 1"})
        assert refused.status_code == 502, refused.text
        assert refused.json()["error"]["code"] == "DB_AUTH_FAILED"
        fine = http.post(f"{CONNECTIONS}/{pg['id']}/query", json={"sql": "SELECT 1 AS x"})
        assert fine.status_code == 200, fine.text
        bad_sql = http.post(f"{CONNECTIONS}/{pg['id']}/query", json={"sql": "SELEC nonsense"})
        assert bad_sql.json()["error"]["code"] == "QUERY_ERROR"
        bodies += [refused.text, fine.text, bad_sql.text]
        bodies += [http.get(f"{CONNECTIONS}/{i}").text for i in (maria["id"], pg["id"])]
        bodies += [http.get(CONNECTIONS).text, http.get(f"{CONNECTIONS}/pool-status").text]
        bodies.append(http.get("/metrics").text)
    server.stop()
    assert server.stopped_cleanly(), server.log()[-2000:]
    log = server.log()
    assert "DB_AUTH_FAILED" in log or "auth" in log.lower(), "the failure was not logged"
    for secret in (wrong, accepted):
        assert secret not in log, "a password reached the log"
        for body in bodies:
            assert secret not in body, "a password reached a response"
    assert server.encryption_key not in log, "the encryption key reached the log"


def test_bearer_keys_from_the_environment(start_server: StartServer) -> None:
    query_key, admin_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    server = start_server(env={"DBPOOL_API_KEY": query_key, "DBPOOL_ADMIN_API_KEY": admin_key})
    with server.client() as http:
        assert http.get("/healthz").status_code == 200
        missing = http.get(CONNECTIONS)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "UNAUTHORIZED"
        as_query = http.get(CONNECTIONS, headers={"Authorization": f"Bearer {query_key}"})
        assert as_query.status_code == 200
        body = {
            "name": "never-stored", "dbType": "postgresql", "host": dbs.PG_HOST,
            "port": dbs.PG_PORT, "database": dbs.PG_DATABASE, "username": dbs.PG_USER,
            "password": "irrelevant-password",
        }
        write = http.post(CONNECTIONS, json=body, headers={"Authorization": f"Bearer {query_key}"})
        assert write.status_code == 403, write.text
        assert write.json()["error"]["code"] == "FORBIDDEN"
    server.stop()
    assert server.stopped_cleanly(), server.log()[-2000:]
    log = server.log()
    assert query_key not in log and admin_key not in log
    assert "auth is OFF" not in log
