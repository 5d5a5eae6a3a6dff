"""A truncated MySQL/MariaDB read on a pool of one connection.

The rest of a result that ends within the drain bound is read and dropped: the SAME
connection (``CONNECTION_ID()``) serves the next request at once, and no second session
of the pool's login (the one a ``KILL QUERY`` would be sent from) ever appears. A result
too large to drain is given up: its statement leaves the server, the login never has more
than ``maxConnections`` sessions, requests meanwhile get a clear 503 with ``Retry-After``,
and the slot comes back once the session's own limit has ended the statement. A client
that hangs up mid-statement on such a pool leaves no slot for a kill: its slot is held
until the server is seen to end the session (the statement over by itself or by its own
limit), then freed, not ``queryTimeout`` + 1 s after the hang-up.

Each test makes a login of its own (``MAX_USER_CONNECTIONS`` = the pool's maximum, so the
server also refuses any excess loudly); a thread samples ``information_schema.PROCESSLIST``
for it throughout.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.faults.test_query_timeouts import _asgi_post_then_disconnect, sleep_sql
from tests.support import dbs
from tests.support.login_sampler import LoginSampler
from tests.support.query import BASE, Api, api, query_registry, running_statements, unique
from tests.support.seam import reuses_sessions

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

MYSQLS = ["mysql", "mariadb"]
# Between two samples: the sampler thread lets the event loop have the GIL (back to back,
# the convoy slows the loop's many small reads several-fold). A KILL's session lives longer
# (connect, KILL, polls of the session list 20 ms apart).
SAMPLE_PAUSE_S = 0.005


@contextmanager
def pool_login(max_connections: int) -> Iterator[tuple[str, str]]:
    user, password = f"dbp_dr_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(user, password, max_user_connections=max_connections)
    try:
        yield user, password
    finally:
        dbs.drop_mysql_user(user)


async def connection_id(api: Api, cid: int) -> int:
    response = await api.query(cid, "SELECT CONNECTION_ID() AS id")
    assert response.status_code == 200, response.text
    return int(response.json()["data"]["rows"][0]["id"])


@pytest.mark.parametrize("read_only", [False, True], ids=["autocommit", "read-only"])
@pytest.mark.parametrize("db_type", MYSQLS)
async def test_a_drained_read_keeps_its_connection_and_sends_no_kill(
    api: Api, db_type: str, read_only: bool,
) -> None:
    # The drivers' public path discards every connection on return (no reset), and opens
    # the next one without waiting for the server to drop the old session: there, the test
    # checks that the pool serves at once and opens one session a request, no more.
    same = reuses_sessions(db_type)
    with pool_login(1 if same else 0) as (user, password):
        cid = await api.register(db_type, username=user, password=password, maxConnections=1,
                                 readOnly=read_only, connectionTimeout=5, queryTimeout=20)
        with LoginSampler(user, SAMPLE_PAUSE_S) as sampler:
            first = await connection_id(api, cid)
            for _ in range(3):
                started = time.monotonic()
                response = await api.query(cid, "SELECT seq AS n FROM seq_1_to_5000", maxRows=10)
                assert response.status_code == 200, response.text
                data = response.json()["data"]
                assert data["truncated"] is True and data["rowCount"] == 10
                # At once (a kill would hold the only slot until the statement's limit),
                # on the same session: no KILL, no discard, no reconnect.
                now = await connection_id(api, cid)
                assert time.monotonic() - started < 2.0
                if same:
                    assert now == first
            await asyncio.sleep(0.1)  # a sample after the last request
        # A KILL QUERY would have come from a second session of the login.
        assert sampler.samples > 10, sampler.samples
        if same:
            assert sampler.ids == {first}, sampler.ids
            assert sampler.peak == 1
        else:
            assert len(sampler.ids) <= 1 + 3 * 2, sampler.ids
        snap = api.snapshot(cid)
        assert snap.checked_out == 0 and snap.open <= 1


@pytest.mark.parametrize("db_type", MYSQLS)
async def test_a_result_too_large_to_drain_is_stopped_within_max(api: Api, db_type: str) -> None:
    marker = unique("huge")
    # About 1 KB a row, 10^8 rows: far past the drain bound (4 MiB, 50 ms).
    huge = (f"SELECT seq AS n, REPEAT('x', 1000) AS pad, '{marker}' AS m "
            "FROM seq_1_to_100000000")
    with pool_login(1) as (user, password):
        cid = await api.register(db_type, username=user, password=password, maxConnections=1,
                                 connectionTimeout=1, queryTimeout=5)
        with LoginSampler(user, SAMPLE_PAUSE_S) as sampler:
            first = await connection_id(api, cid)
            started = time.monotonic()
            response = await api.query(cid, huge, maxRows=10)
            assert response.status_code == 200, response.text
            assert response.json()["data"]["truncated"] is True
            # The one slot waits for the statement to be gone: requests meant time get a
            # clear 503 with Retry-After, never a hang.
            served = None
            for _ in range(40):  # bounded: ~1 s per refused request
                late = await api.query(cid, "SELECT CONNECTION_ID() AS id")
                if late.status_code == 200:
                    served = int(late.json()["data"]["rows"][0]["id"])
                    break
                assert late.status_code == 503, late.text
                assert late.json()["error"]["code"] in ("POOL_EXHAUSTED", "DB_UNAVAILABLE")
                assert "retry-after" in late.headers, late.headers
            elapsed = time.monotonic() - started
            assert served is not None, "the pool never served again"
            assert served != first  # given up (the public path opens a new one anyway)
            # No slot for a kill: freed queryTimeout (5 s) + 1 s after the read was given up.
            assert elapsed < 5 + 1 + 2.5, elapsed
            assert await running_statements("mariadb", marker) == 0
        assert sampler.samples > 10, sampler.samples
        assert sampler.peak <= 1, sampler.ids


async def test_a_hang_up_holds_the_only_slot_until_the_server_ends_the_session(
    api: Api,
) -> None:
    marker = unique("hung")
    with pool_login(1) as (user, password):
        cid = await api.register("mariadb", username=user, password=password,
                                 maxConnections=1, connectionTimeout=1, queryTimeout=6)
        with LoginSampler(user, SAMPLE_PAUSE_S) as sampler:
            started = time.monotonic()
            sent = await _asgi_post_then_disconnect(
                api, f"{BASE}/{cid}/query", {"sql": sleep_sql("mariadb", 30, marker)},
                hang_up_after=3.0)
            assert sent and sent[0]["status"] == 499, sent
            refused = 0
            for _ in range(40):  # bounded: ~1 s per refused request
                late = await api.query(cid, "SELECT 1 AS ok")
                if late.status_code == 200:
                    break
                assert late.status_code == 503, late.text
                assert "retry-after" in late.headers, late.headers
                refused += 1
            elapsed = time.monotonic() - started
            assert late.status_code == 200, late.text
            # No slot for a kill: the slot is held while the session runs, until the server
            # closes it (SLEEP sees its client gone 5 s in, or the 6 s limit ends it; MariaDB
            # may keep that limit up to 2 s late): its close is seen and confirmed on the
            # session list, not waited out until queryTimeout + 1 s after the hang-up (10 s).
            assert 4.5 <= elapsed < 9.0, (elapsed, refused)
            assert await running_statements("mariadb", marker) == 0
        assert sampler.peak <= 1, sampler.ids
