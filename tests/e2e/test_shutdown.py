"""SIGTERM with a stuck request: `dbpool serve` gives uvicorn a graceful-shutdown limit equal
to DBPOOL_SHUTDOWN_GRACE_SECONDS, so the process ends within grace + a few seconds, exits 0,
its stuck statement is cancelled on the server and none of its pool's backends is left."""

from __future__ import annotations

import asyncio
import secrets
import threading
import time

import httpx
import psutil
import pytest

from tests.e2e.conftest import StartServer
from tests.support import dbs

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CONNECTIONS = "/api/external-db-connections"
GRACE = 2.0


async def _backends(marker: str, ports: list[int]) -> tuple[int, int]:
    """(backends running the marked statement, backends on the server's client ports)."""
    conn = await dbs.pg_admin()
    try:
        stuck = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND pid <> pg_backend_pid()",
            f"%{marker}%",
        )
        on_ports = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE client_addr = '127.0.0.1' AND client_port = ANY($1::int[])",
            ports,
        )
        return int(stuck), int(on_ports)
    finally:
        await conn.close()


def test_sigterm_with_a_stuck_request_ends_within_the_grace(start_server: StartServer) -> None:
    server = start_server(env={"DBPOOL_SHUTDOWN_GRACE_SECONDS": str(GRACE)})
    marker = f"stuck_{secrets.token_hex(6)}"
    with server.client() as http:
        body = {
            "name": f"e2e-{marker}", "dbType": "postgresql", "host": dbs.PG_HOST,
            "port": dbs.PG_PORT, "database": dbs.PG_DATABASE, "username": dbs.PG_USER,
            "password": dbs.PG_PASSWORD, "maxConnections": 2, "queryTimeout": 120,
        }  # fmt: skip
        created = http.post(CONNECTIONS, json=body)
        assert created.status_code == 201, created.text
        cid = created.json()["data"]["id"]

    outcome: list[object] = []

    def stuck_request() -> None:
        try:
            with httpx.Client(base_url=server.base_url, timeout=90) as client:
                sql = f"SELECT pg_sleep(60) AS {marker}"
                outcome.append(client.post(f"{CONNECTIONS}/{cid}/query", json={"sql": sql}))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    caller = threading.Thread(target=stuck_request, daemon=True)
    caller.start()
    deadline = time.monotonic() + 10
    assert server.process is not None
    while asyncio.run(_backends(marker, []))[0] == 0:
        assert time.monotonic() < deadline, server.log()[-2000:]
        time.sleep(0.1)
    ports = [c.laddr.port for c in psutil.Process(server.process.pid).net_connections("tcp")
             if c.raddr and c.raddr.port == dbs.PG_PORT]  # fmt: skip
    assert asyncio.run(_backends(marker, ports)) == (1, 1)

    began = time.monotonic()
    code = server.stop(kill_after=GRACE + 10)
    took = time.monotonic() - began
    assert code == 0, (code, server.log()[-3000:])
    assert took <= 2 * GRACE + 3, (took, server.log()[-3000:])
    assert server.stopped_cleanly() and "pool closed" in server.log(), server.log()[-3000:]
    caller.join(10)
    assert outcome, "the stuck caller never got an answer"
    got = outcome[0]
    assert not (isinstance(got, httpx.Response) and got.status_code == 200), got
    # The stuck statement was cancelled on the server and the pool left no backend behind.
    deadline = time.monotonic() + 3
    while (left := asyncio.run(_backends(marker, ports))) != (0, 0):
        assert time.monotonic() < deadline, f"left on the server (stuck, pool): {left}"
        time.sleep(0.1)
