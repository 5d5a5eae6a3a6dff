"""RESULT_TOO_LARGE from a real ``dbpool serve``: a result past DBPOOL_MAX_RESPONSE_BYTES or a
transaction past its total-row cap is refused with 413, the server's peak memory stays flat
while it refuses a result many times its cap, and the connections come back clean."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import StartServer
from tests.support import dbs

CONNECTIONS = "/api/external-db-connections"
MIB = 1024 * 1024
CAP = 4 * MIB

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb]


def _peak_rss(pid: int) -> int:
    """The process's peak resident set size so far (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _register(http: httpx.Client, **body: Any) -> int:
    base = {"name": f"cap-{secrets.token_hex(4)}", "maxConnections": 2, "connectionTimeout": 5,
            "queryTimeout": 30}
    response = http.post(CONNECTIONS, json=base | body)
    assert response.status_code == 201, response.text
    return int(response.json()["data"]["id"])


def _too_large(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 413, response.text[:500]
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == "RESULT_TOO_LARGE"
    return error


def test_results_past_the_byte_cap_are_refused_with_flat_memory(
    start_server: StartServer,
) -> None:
    user, password = f"dbp_cap_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(user, password)
    try:
        server = start_server(env={"DBPOOL_MAX_RESPONSE_BYTES": str(CAP)})
        assert server.process is not None
        with server.client() as http:
            maria = _register(http, dbType="mariadb", host=dbs.MY_HOST, port=dbs.MY_PORT,
                              database=dbs.MY_DATABASE, username=user, password=password)
            pg = _register(http, dbType="postgresql", host=dbs.PG_HOST, port=dbs.PG_PORT,
                           database=dbs.PG_DATABASE, username=dbs.PG_USER,
                           password=dbs.PG_PASSWORD, options={"ssl": "disable"})
            for cid in (maria, pg):  # warm up: pools, prepared paths, allocator arenas
                assert http.post(f"{CONNECTIONS}/{cid}/query",
                                 json={"sql": "SELECT 1 AS one"}).status_code == 200
            before = _peak_rss(server.process.pid)
            # 10,000 rows of 20 kB: 200 MB on the wire, fifty times the cap.
            huge = "SELECT REPEAT('x', 20000) AS v FROM seq_1_to_10000"
            error = _too_large(http.post(f"{CONNECTIONS}/{maria}/query",
                                         json={"sql": huge, "maxRows": 10000}))
            assert error["details"]["maxBytes"] == CAP
            assert "DBPOOL_MAX_RESPONSE_BYTES" in error["message"]
            # Forty statements of 2 MB each: each fits, together twenty times the cap.
            statement = {"sql": "SELECT repeat('x', 1000) AS v FROM generate_series(1, 2000)"}
            error = _too_large(http.post(f"{CONNECTIONS}/{pg}/transaction",
                                         json={"statements": [statement] * 40, "maxRows": 2000}))
            assert error["details"]["statementIndex"] == 2
            grew = _peak_rss(server.process.pid) - before
            assert grew < 48 * MIB, f"peak RSS grew {grew / MIB:.0f} MiB refusing the results"
            # The connections are usable (MariaDB's was discarded: rows were left unread).
            for cid in (maria, pg):
                ok = http.post(f"{CONNECTIONS}/{cid}/query", json={"sql": "SELECT 2 AS two"})
                assert ok.status_code == 200 and ok.json()["data"]["rows"] == [{"two": 2}]
            assert dbs.my_count(user) <= 2
    finally:
        dbs.drop_mysql_user(user)


def test_a_transaction_past_its_total_row_cap_is_refused(start_server: StartServer) -> None:
    server = start_server(env={"DBPOOL_MAX_TRANSACTION_ROWS": "100"})
    with server.client() as http:
        pg = _register(http, dbType="postgresql", host=dbs.PG_HOST, port=dbs.PG_PORT,
                       database=dbs.PG_DATABASE, username=dbs.PG_USER,
                       password=dbs.PG_PASSWORD, options={"ssl": "disable"})
        fifty = {"sql": "SELECT g FROM generate_series(1, 50) AS g"}
        fits = http.post(f"{CONNECTIONS}/{pg}/transaction", json={"statements": [fifty] * 2})
        assert fits.status_code == 200, fits.text
        error = _too_large(http.post(f"{CONNECTIONS}/{pg}/transaction",
                                     json={"statements": [fifty] * 3}))
        assert error["details"] == {"maxRows": 100, "statementIndex": 2}
        assert "DBPOOL_MAX_TRANSACTION_ROWS" in error["message"]
