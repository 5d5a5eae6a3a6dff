"""Clients that hang up mid-query or mid-return are normal traffic. Against a real
`dbpool serve` process, rounds of concurrent httpx clients close their connections at
random moments (short statements, and long ones that only the server-side cancel can stop):
the service log has no ERROR line and no traceback, every cancelled statement is gone from
the server, and no connection leaked (the pool's count equals the database's, then zero)."""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import httpx
import pytest

from tests.e2e.conftest import StartServer
from tests.support import dbs

pytestmark = [pytest.mark.slow]

CONNECTIONS = "/api/external-db-connections"
CLIENTS = 48  # per round; the pool has 6 connections, so most wait, some run, some return
ROUNDS = 2
LONG_EVERY = 8  # one client in eight runs a 30 s statement: only a server cancel ends it
MAX_CONNECTIONS = 6


@dataclass(frozen=True)
class Db:
    kind: str
    user: str
    password: str

    def body(self, name: str) -> dict[str, object]:
        mysql = self.kind == "mariadb"
        return {
            "name": name, "dbType": self.kind, "host": dbs.MY_HOST if mysql else dbs.PG_HOST,
            "port": dbs.MY_PORT if mysql else dbs.PG_PORT, "database": dbs.MY_DATABASE,
            "username": self.user, "password": self.password,
            "maxConnections": MAX_CONNECTIONS, "queryTimeout": 60,
        }  # fmt: skip

    def sleep_sql(self, seconds: float, marker: str) -> str:
        fn = "SLEEP" if self.kind == "mariadb" else "pg_sleep"
        return f"SELECT {fn}({seconds}) AS {marker}"

    async def sessions(self, marker: str) -> tuple[int, int]:
        """(this user's sessions, those still running a marked statement), as the server
        itself counts them."""
        if self.kind == "mariadb":
            return await asyncio.to_thread(self._my_sessions, marker)
        conn = await dbs.pg_admin()
        try:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, count(*) FILTER (WHERE state = 'active' AND query LIKE $2)"
                " AS running FROM pg_stat_activity WHERE usename = $1",
                self.user, f"%{marker}%",
            )  # fmt: skip
            assert row is not None
            return int(row["n"]), int(row["running"])
        finally:
            await conn.close()

    def _my_sessions(self, marker: str) -> tuple[int, int]:
        conn = dbs.my_admin()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*), coalesce(sum(COMMAND = 'Query' AND INFO LIKE %s), 0)"
                    " FROM information_schema.PROCESSLIST WHERE USER = %s",
                    (f"%{marker}%", self.user),
                )
                n, running = cur.fetchone()
                return int(n), int(running)
        finally:
            conn.close()


async def _pg_role(name: str, password: str, create: bool) -> None:
    conn = await asyncpg.connect(host=dbs.PG_HOST, port=dbs.PG_PORT, user="postgres",
                                 database="postgres")  # fmt: skip
    try:
        if create:
            await conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        else:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", name
            )
            await conn.execute(f"DROP ROLE IF EXISTS {name}")
    finally:
        await conn.close()


@pytest.fixture(params=[pytest.param("postgresql", marks=pytest.mark.postgresql),
                        pytest.param("mariadb", marks=pytest.mark.mariadb)])  # fmt: skip
def db(request: pytest.FixtureRequest) -> Iterator[Db]:
    """A throwaway account, so the test counts only its own sessions."""
    user, password = f"dbp_hangup_{secrets.token_hex(4)}", secrets.token_hex(12)
    if request.param == "mariadb":
        dbs.create_mysql_user(user, password)
    else:
        asyncio.run(_pg_role(user, password, create=True))
    try:
        yield Db(request.param, user, password)
    finally:
        if request.param == "mariadb":
            dbs.drop_mysql_user(user)
        else:
            asyncio.run(_pg_role(user, password, create=False))


async def _hang_up(base_url: str, cid: int, sql: str, after: float) -> None:
    """Send ``sql`` and close the connection after ``after`` seconds, whatever is happening."""
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        try:
            async with asyncio.timeout(after):
                await client.post(f"{CONNECTIONS}/{cid}/query", json={"sql": sql})
        except TimeoutError:
            pass  # the client went away: its connection is closed on the way out


async def _settled(db: Db, marker: str, within: float) -> tuple[int, int]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (counts := await db.sessions(marker))[1] and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return counts


async def _rounds(base_url: str, cid: int, db: Db, marker: str) -> None:
    rng = random.Random(20261201)
    for _ in range(ROUNDS):
        # The long ones hang up later, so that even on a loaded machine some of them are
        # running on the server when their client goes (the scenario under test).
        calls = [
            _hang_up(base_url, cid, db.sleep_sql(30, marker), after=rng.uniform(1.0, 1.5))
            if i % LONG_EVERY == 0 else
            _hang_up(base_url, cid, db.sleep_sql(0.05, marker), after=rng.uniform(0.02, 0.4))
            for i in range(CLIENTS)
        ]  # fmt: skip
        await asyncio.gather(*calls)
        # Every statement of a client that went away is gone from the server: the 30 s ones
        # only because they were cancelled there.
        assert (await _settled(db, marker, within=5))[1] == 0, "a statement outlived its client"


def test_clients_hanging_up_leave_no_error_no_statement_no_leak(
    start_server: StartServer, db: Db
) -> None:
    server = start_server()
    marker = f"hangup_{secrets.token_hex(4)}"
    with server.client() as http:
        created = http.post(CONNECTIONS, json=db.body(f"e2e-{marker}"))
        assert created.status_code == 201, created.text
        cid = created.json()["data"]["id"]
        # Build the pool first: on a loaded machine a first build can outlast every
        # client's patience, and pool-status would then have no pool to show.
        warm = http.post(f"{CONNECTIONS}/{cid}/query", json={"sql": "SELECT 1 AS one"})
        assert warm.status_code == 200, warm.text
        asyncio.run(_rounds(server.base_url, cid, db, marker))
        # A request still queued when its client went leaves the queue 0.5 s later (the
        # hang-up grace): the last round's may still be there for a moment.
        deadline = time.monotonic() + 3
        while True:
            entry = http.get(f"{CONNECTIONS}/{cid}/pool-status").json()["data"]
            idle = (entry["activeConnections"], entry["waitingRequests"]) == (0, 0)
            if idle or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert idle, entry
        # The server may still be tearing down discarded connections (and the short-lived
        # ones that carried the cancels): what remains must be exactly the pool's own.
        deadline = time.monotonic() + 5
        while (counts := asyncio.run(db.sessions(marker)))[0] > entry["openConnections"]:
            assert time.monotonic() < deadline, (counts, entry)
            time.sleep(0.1)
            entry = http.get(f"{CONNECTIONS}/{cid}/pool-status").json()["data"]
        assert counts == (entry["openConnections"], 0), (counts, entry)
        assert entry["openConnections"] <= MAX_CONNECTIONS
        fine = http.post(f"{CONNECTIONS}/{cid}/query", json={"sql": "SELECT 1 AS one"})
        assert fine.status_code == 200, fine.text  # the pool is still healthy
    assert server.stop() == 0 and server.stopped_cleanly(), server.log()[-3000:]
    assert asyncio.run(db.sessions(marker)) == (0, 0), "connections outlived the server"
    log = server.log()
    assert "client disconnected" in log  # the scenario really happened
    problems = [line for line in log.splitlines()
                if " ERROR " in line or "Traceback" in line or "failed" in line]  # fmt: skip
    assert not problems, "\n".join(problems[:20])
