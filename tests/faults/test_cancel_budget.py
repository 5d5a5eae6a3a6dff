"""Cancels inside the budget: while statements time out (the server's limit, a tighter
request limit) and clients hang up, the database never counts more than ``maxConnections``
sessions of the pool's login (sampled from the database's own session list); a statement
the server stopped leaves its connection in the pool, not replaced."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from tests.faults.test_query_timeouts import _asgi_post_then_disconnect, sleep_sql
from tests.support import dbs
from tests.support.query import (
    BASE,
    Api,
    api,
    query_registry,
    running_statements,
    unique,
    wait_until,
)

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.postgresql, pytest.mark.mariadb, pytest.mark.slow]

MAX = 2
Count = Callable[[], Awaitable[int]]


@asynccontextmanager
async def throwaway_login(db_type: str) -> AsyncIterator[tuple[str, str, Count]]:
    """A login of this test's own, and how many sessions the database counts for it."""
    user, password = f"dbp_cb_{secrets.token_hex(4)}", secrets.token_hex(12)
    if db_type == "postgresql":
        admin = await dbs.pg_admin()
        await admin.execute(f"CREATE ROLE {user} LOGIN PASSWORD '{password}'")

        serial = asyncio.Lock()  # the Sampler and the test itself both count

        async def count() -> int:
            async with serial:  # one asyncpg connection runs one operation at a time
                return int(await admin.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE usename = $1", user))
        try:
            yield user, password, count
        finally:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", user)
            await admin.execute(f"DROP ROLE IF EXISTS {user}")
            await admin.close()
        return
    dbs.create_mysql_user(user, password)
    sampler = dbs.my_admin()  # one connection for every sample: sampling adds no load
    one_at_a_time = threading.Lock()  # the Sampler and the test itself both count

    def sessions() -> int:
        with one_at_a_time, sampler.cursor() as cur:
            cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s",
                        (user,))
            return int(cur.fetchone()[0])

    async def my_count() -> int:
        return await asyncio.to_thread(sessions)
    try:
        yield user, password, my_count
    finally:
        sampler.close()
        dbs.drop_mysql_user(user)


class Sampler:
    """Samples ``count`` in the background and keeps the highest value seen."""

    def __init__(self, count: Count) -> None:
        self.count = count
        self.peak = 0
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def _run(self) -> None:
        for _ in range(3000):  # bounded: about a minute at most
            if self._stopped:  # ends between samples: a count is never cut off midway
                return
            self.peak = max(self.peak, await self.count())
            await asyncio.sleep(0.01)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._stopped = True


async def _register(api: Api, db_type: str, user: str, password: str, **body: object) -> int:
    pg = db_type == "postgresql"
    return await api.register(db_type, username=user, password=password,
                              database=dbs.PG_DATABASE if pg else dbs.MY_DATABASE,
                              maxConnections=MAX, connectionTimeout=15, **body)


def _server_code(body: dict[str, object]) -> object:
    error = body["error"]
    assert isinstance(error, dict) and error["code"] == "QUERY_TIMEOUT", body
    details = error["details"]
    assert isinstance(details, dict)
    return details.get("sqlstate") if "sqlstate" in details and "errno" not in details \
        else details.get("errno")


@pytest.mark.parametrize("db_type", ["postgresql", "mariadb"])
async def test_timeouts_and_hang_ups_stay_within_max_connections(api: Api, db_type: str) -> None:
    async with throwaway_login(db_type) as (user, password, count):
        cid = await _register(api, db_type, user, password, queryTimeout=1)
        with Sampler(count) as sampler:
            # Six statements stopped by the server's own limit (queryTimeout 1 s).
            server_stopped = await asyncio.gather(*(
                api.query(cid, sleep_sql(db_type, 3, unique("srv"))) for _ in range(6)))
            assert [r.status_code for r in server_stopped] == [504] * 6
            assert {_server_code(r.json()) for r in server_stopped} <= {"57014", 1969}
            # Six past a tighter request limit (0.5 s): PostgreSQL's CancelRequest, the
            # session's own limit on MariaDB.
            request_limited = await asyncio.gather(*(
                api.query(cid, sleep_sql(db_type, 3, unique("req")), timeoutSeconds=0.5)
                for _ in range(6)))
            assert [r.status_code for r in request_limited] == [504] * 6
            # Hang-ups with a slot free: the cancel stays inside the pool.
            for _ in range(2):
                sent = await _asgi_post_then_disconnect(
                    api, f"{BASE}/{cid}/query", {"sql": sleep_sql(db_type, 10, unique("gone"))},
                    hang_up_after=0.5)
                assert sent[0]["status"] == 499
            assert await api.rows(cid, "SELECT 1 AS ok") == [{"ok": 1}]
        assert sampler.peak <= MAX, f"the database counted {sampler.peak} sessions"
        assert 1 <= await count() <= MAX
        snap = api.snapshot(cid)
        assert snap.checked_out == 0 and snap.checked_in == await count()


@pytest.mark.parametrize("db_type", ["postgresql", "mariadb"])
async def test_a_statement_the_server_stopped_keeps_its_connection(
    api: Api, db_type: str
) -> None:
    async with throwaway_login(db_type) as (user, password, count):
        cid = await _register(api, db_type, user, password, queryTimeout=1)
        me = "SELECT pg_backend_pid() AS me" if db_type == "postgresql" else \
            "SELECT CONNECTION_ID() AS me"
        before = await api.rows(cid, me)
        timed_out = await api.query(cid, sleep_sql(db_type, 3, unique("keep")))
        assert timed_out.status_code == 504
        if db_type == "postgresql":  # also after the client timer's CancelRequest
            cancelled = await api.query(cid, sleep_sql(db_type, 3, unique("keep")),
                                        timeoutSeconds=0.3)
            assert cancelled.status_code == 504
        assert await api.rows(cid, me) == before, "the connection was replaced"
        assert await count() == 1
        assert api.snapshot(cid).stats.recreations == 0


async def test_mariadb_hang_ups_on_every_connection_open_no_extra_one(api: Api) -> None:
    """Every slot's client hangs up at once: no slot comes free for a ``KILL``, and none is
    opened past the budget for it; the session's own limit (queryTimeout) ends the
    statements, and after it each kill goes out from its statement's own slot (finding
    nothing), and the slots come back."""
    async with throwaway_login("mariadb") as (user, password, count):
        cid = await _register(api, "mariadb", user, password, queryTimeout=3)
        markers = [unique("busy") for _ in range(MAX)]
        with Sampler(count) as sampler:
            gone = await asyncio.gather(*(
                _asgi_post_then_disconnect(api, f"{BASE}/{cid}/query",
                                           {"sql": sleep_sql("mariadb", 10, m)},
                                           hang_up_after=1.0)
                for m in markers))
            assert [sent[0]["status"] for sent in gone] == [499] * MAX
            # Ended by the server's limit (3 s), not left to their 10 s.
            assert await wait_until(lambda: _none_running(markers), within=5.0)
            ok = await api.query(cid, "SELECT 1 AS ok")  # waits for a slot freed after it
            assert ok.status_code == 200, ok.text
        assert sampler.peak <= MAX, f"the database counted {sampler.peak} sessions"


async def _none_running(markers: list[str]) -> bool:
    return all([await running_statements("mariadb", m) == 0 for m in markers])
