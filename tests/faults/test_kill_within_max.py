"""A MariaDB ``KILL QUERY`` never takes a pool's login past ``maxConnections``.

A statement whose client hung up must be killed from another session. That session is one
of the pool's own, in a slot of its gate, and both it and the killed statement's session
keep their slots until the server no longer lists the statement's session:

- with every slot busy, the kill waits for the next slot freed (no extra connection);
- with a kill the server (here: its network path) is slow to answer, the request is
  answered in time but neither slot is freed early, so no new session opens next to
  sessions the server still runs.

The pool's login is made for the test; a thread samples ``information_schema.PROCESSLIST``
for it as fast as the server answers, throughout.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from app.api.routes import queries
from tests.faults.test_query_timeouts import _asgi_post_then_disconnect, sleep_sql
from tests.support import dbs
from tests.support.login_sampler import LoginSampler
from tests.support.proxy import TcpProxy
from tests.support.query import BASE, Api, api, query_registry, running_statements, unique

__all__ = ["api", "query_registry"]  # fixtures

pytestmark = [pytest.mark.mariadb, pytest.mark.slow]

MAX = 2


def verdict(sampler: LoginSampler) -> str:
    return f"the server listed {sampler.peak} sessions of the pool (max {MAX}): {sampler.at_peak}"


@contextmanager
def pool_login() -> Iterator[tuple[str, str]]:
    user, password = f"dbp_km_{secrets.token_hex(4)}", secrets.token_hex(12)
    dbs.create_mysql_user(user, password)
    try:
        yield user, password
    finally:
        dbs.drop_mysql_user(user)


async def _gone(marker: str) -> bool:
    return await running_statements("mariadb", marker) == 0


async def _settle(marker: str, within: float) -> float | None:
    """Seconds until no statement with ``marker`` runs on the server (None: still there)."""
    started = time.monotonic()
    while time.monotonic() - started < within:
        if await _gone(marker):
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    return None


async def test_every_slot_busy_the_kill_waits_for_a_slot_of_its_own(api: Api) -> None:
    with pool_login() as (user, password):
        cid = await api.register("mariadb", username=user, password=password,
                                 maxConnections=MAX, connectionTimeout=10, queryTimeout=30)
        with LoginSampler(user) as sampler:
            for _ in range(3):  # every round must stay within MAX
                gone, busy = unique("gone"), unique("busy")
                # One slot: a statement whose client stays (it ends on its own after 2 s).
                stays = asyncio.create_task(api.query(cid, sleep_sql("mariadb", 2, busy)))
                # The other: a 30 s statement whose client hangs up after 0.5 s.
                sent = await _asgi_post_then_disconnect(
                    api, f"{BASE}/{cid}/query", {"sql": sleep_sql("mariadb", 30, gone)},
                    hang_up_after=0.5)
                assert sent and sent[0]["status"] == 499, sent
                assert (await stays).status_code == 200
                # Killed once the busy slot came free, not left to its 30 s.
                assert await _settle(gone, within=5.0) is not None, \
                    "the statement outlived its client"
            assert (await api.query(cid, "SELECT 1 AS ok")).status_code == 200
        assert sampler.samples > 100, sampler.samples
        assert sampler.peak <= MAX, verdict(sampler)


async def test_a_kill_slow_to_answer_keeps_its_slots_until_the_session_is_gone(
    api: Api, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kill must go out on a warm connection within VALIDATE_AFTER of its last answer (no
    # checkout ping through the slowed link): the hang-up is acted on at once.
    monkeypatch.setattr(queries, "HANG_UP_GRACE_SECONDS", 0.0)
    with pool_login() as (user, password):
        async with TcpProxy(dbs.MY_HOST, dbs.MY_PORT) as proxy:
            # connectionTimeout 1: the request waits at most 1 s for the stop of its statement.
            cid = await api.register("mariadb", host="127.0.0.1", port=proxy.port,
                                     username=user, password=password, maxConnections=MAX,
                                     connectionTimeout=1, queryTimeout=30)
            gone = unique("gone")
            with LoginSampler(user) as sampler:
                # Two warm connections that have just answered (no ping on their next use).
                warm = [api.query(cid, sleep_sql("mariadb", 1, unique("warm")))
                        for _ in range(MAX)]
                assert [r.status_code for r in await asyncio.gather(*warm)] == [200] * MAX
                hang_up = asyncio.create_task(_asgi_post_then_disconnect(
                    api, f"{BASE}/{cid}/query", {"sql": sleep_sql("mariadb", 30, gone)},
                    hang_up_after=0.2))
                for _ in range(100):  # bounded: until the statement runs on the server
                    if not await _gone(gone):
                        break
                    await asyncio.sleep(0.005)
                # From now on every chunk takes 1.5 s through the proxy, so the KILL sent on
                # the other (warm) connection is answered about 3 s later: past the request's
                # 1 s bound. The server only reads it 1.5 s after it was sent.
                proxy.delay(1.5)
                sent = await hang_up
                assert sent and sent[0]["status"] == 499, sent
                proxy.restore()  # new links are fast again: a freed slot would fill at once
                late = await asyncio.gather(*(api.query(cid, "SELECT 1 AS ok")
                                              for _ in range(MAX)))
                for response in late:  # served, or no slot within connectionTimeout
                    assert response.status_code in (200, 503), response.text
                assert await _settle(gone, within=10.0) is not None, \
                    "the statement outlived its client"
                ok = await api.query(cid, "SELECT 1 AS ok")
                assert ok.status_code == 200, ok.text
        assert sampler.peak <= MAX, verdict(sampler)


async def test_a_statement_its_own_limit_does_not_stop_is_killed_before_its_slot_is_freed(
    api: Api,
) -> None:
    """The session's statement limit is not a promise that frees a slot: MariaDB's timer can
    fire seconds late, and a caller can lift it for one statement (``SET STATEMENT
    max_statement_time=0 FOR ...``). Past the request's timeout the statement is killed, and
    its slot is freed only once the server no longer lists its session."""
    with pool_login() as (user, password):
        async with TcpProxy(dbs.MY_HOST, dbs.MY_PORT) as proxy:
            cid = await api.register("mariadb", host="127.0.0.1", port=proxy.port,
                                     username=user, password=password, maxConnections=MAX,
                                     connectionTimeout=10, queryTimeout=30)
            with LoginSampler(user) as sampler:
                for _ in range(2):
                    late = unique("late")
                    # A slow link: the statement goes out 0.3-0.6 s into the request, so the
                    # limit the request set on the session would end it after the request's
                    # own timer (1 s + its margin) has fired.
                    proxy.delay(0.3)
                    sql = f"SET STATEMENT max_statement_time=0 FOR SELECT SLEEP(6) AS {late}"
                    timed_out = await api.query(cid, sql, timeoutSeconds=1)
                    proxy.restore()
                    assert timed_out.status_code == 504, timed_out.text
                    assert timed_out.json()["error"]["code"] == "QUERY_TIMEOUT", timed_out.text
                    # Every slot taken at once: a slot freed before the session is gone
                    # would open a session next to it.
                    busy = [api.query(cid, sleep_sql("mariadb", 1, unique("next")))
                            for _ in range(MAX)]
                    assert [r.status_code for r in await asyncio.gather(*busy)] == [200] * MAX
                    # Killed, not left to its 6 s.
                    assert await _gone(late), "the statement outlived its request's timeout"
        assert sampler.samples > 50, sampler.samples
        assert sampler.peak <= MAX, verdict(sampler)


async def test_every_client_hanging_up_on_short_statements_leaves_the_pool_serving(
    api: Api,
) -> None:
    """A burst of hang-ups on every connection of a pool (a load balancer closing all its
    connections) must not discard them all: each statement about to end ends by itself
    within the hang-up grace and its connection goes back clean. Discarded, every slot
    would hold a statement awaiting a kill that no slot is free to send, until
    ``queryTimeout`` + 1 s (31 s here)."""
    with pool_login() as (user, password):
        cid = await api.register("mariadb", username=user, password=password,
                                 maxConnections=MAX, connectionTimeout=2, queryTimeout=30)
        with LoginSampler(user) as sampler:
            for _ in range(3):
                # Each client hangs up 0.1 s into a 0.3 s statement, on every connection.
                burst = [_asgi_post_then_disconnect(
                    api, f"{BASE}/{cid}/query",
                    {"sql": sleep_sql("mariadb", 0.3, unique("short"))}, hang_up_after=0.1)
                    for _ in range(MAX)]  # fmt: skip
                for sent in await asyncio.gather(*burst):
                    assert sent and sent[0]["status"] == 200, sent  # ended by itself
                served = await asyncio.gather(*(api.query(cid, "SELECT 1 AS ok")
                                                for _ in range(MAX)))
                assert [r.status_code for r in served] == [200] * MAX, served[0].text
        assert sampler.samples > 20, sampler.samples
        assert sampler.peak <= MAX, verdict(sampler)
        assert len(sampler.ids) == MAX, sampler.ids  # the same connections throughout


async def test_a_statement_outliving_its_limit_on_the_only_slot_is_killed_from_that_slot(
    api: Api,
) -> None:
    """With every slot holding a statement awaiting its kill (here the only one), no slot
    comes for the kill: after ``queryTimeout`` + 1 s it goes out from the statement's own
    slot. A statement that outlives its session's limit (lifted by the caller here; MariaDB
    can also be late to keep it) is killed then, not left to run on with its slot freed and
    the pool opening a session next to it. Only that kill's own round trips may be counted
    next to the statement."""
    with pool_login() as (user, password):
        cid = await api.register("mariadb", username=user, password=password,
                                 maxConnections=1, connectionTimeout=1, queryTimeout=3)
        late = unique("late")
        with LoginSampler(user) as sampler:
            # About 13 s of CPU on the server, unlimited; unlike SLEEP (which notices a
            # closed client every 5 s), it never looks at its client until it ends.
            sql = ("SET STATEMENT max_statement_time=0 FOR "
                   f"SELECT BENCHMARK(800000000, 1+1) AS {late}")
            sent = await _asgi_post_then_disconnect(api, f"{BASE}/{cid}/query", {"sql": sql},
                                                    hang_up_after=0.5)
            assert sent and sent[0]["status"] == 499, sent
            hung_up = time.monotonic()
            # queryTimeout + 1 s after the hang-up (and its 0.5 s grace), then the kill.
            assert await _settle(late, within=10.0) is not None, "left to run to its end"
            assert time.monotonic() - hung_up < 8.0
            for _ in range(10):  # bounded: the slot comes back once the kill has seen it gone
                served = await api.query(cid, "SELECT 1 AS ok")
                if served.status_code == 200:
                    break
            assert served.status_code == 200, served.text
        assert sampler.samples > 50, sampler.samples
        assert sampler.peak <= 2, verdict(sampler)
        if sampler.peak == 2:  # the statement and the connection sending its kill, no other
            statements = [str(row[2] or "") for row in sampler.at_peak]
            assert any(late in sql for sql in statements), sampler.at_peak
            assert not any("SELECT 1" in sql for sql in statements), sampler.at_peak


async def test_every_slot_awaiting_a_kill_the_first_statement_to_end_frees_the_killers_slot(
    api: Api, caplog: pytest.LogCaptureFixture,
) -> None:
    """Every slot holds a statement whose client hung up, so no slot is free to send a kill.
    One statement ends by itself: the pool sees its session close (it watches the socket it
    stopped sending on) and frees its slot at once, and the kill of the other goes out from
    that slot, not ``queryTimeout`` + 1 s later (31 s here) from a slot of its own."""
    with pool_login() as (user, password):
        cid = await api.register("mariadb", username=user, password=password,
                                 maxConnections=MAX, connectionTimeout=10, queryTimeout=30)
        with LoginSampler(user) as sampler:
            for _ in range(2):
                ends, stays = unique("ends"), unique("stays")
                sent = await asyncio.gather(*(_asgi_post_then_disconnect(
                    api, f"{BASE}/{cid}/query", {"sql": sleep_sql("mariadb", seconds, marker)},
                    hang_up_after=0.2) for seconds, marker in ((1.5, ends), (30, stays))))
                assert [s[0]["status"] for s in sent if s] == [499, 499], sent
                hung_up = time.monotonic()
                took = await _settle(stays, within=8.0)
                assert took is not None, "the statement outlived its client"
                assert time.monotonic() - hung_up < 4.0  # 1.3 s left of the 1.5 s one, a kill
                served = await asyncio.gather(*(api.query(cid, "SELECT 1 AS ok")
                                                for _ in range(MAX)))
                assert [r.status_code for r in served] == [200] * MAX, served[0].text
        assert sampler.samples > 50, sampler.samples
        assert sampler.peak <= MAX, verdict(sampler)
    assert "from its own slot" not in caplog.text
