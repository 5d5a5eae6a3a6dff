"""A database that goes away and comes back, seen through TCP proxies the test controls, with
the housekeeper running: requests fail within connection_timeout, then fast (circuit open)
with DB_UNAVAILABLE; the monitor shows it; and the background probe follows the database
back within DBPOOL_PROBE_MAX_INTERVAL_SECONDS (default 1 s) of the restore, idle pools
included, however long the outage lasted. No request ever hangs."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime

import pytest

from app.errors import DatabaseError, DbUnavailable
from tests.support import dbs
from tests.support.monitor import (
    PASSWORD,
    Monitor,
    eventually,
    monitor_settings,
    monitored,
    pg_config,
    pg_count,
)
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CONNECTION_TIMEOUT = 2.0
HANG_BOUND = CONNECTION_TIMEOUT + 3.0  # anything slower than this counts as a hang
# The default probe cap (1 s) and what the issue asks of it: status back to ok within 1.5 s
# of the restore, the first request after it within about a second (+ a loaded machine).
STATUS_BOUND = 1.5
FIRST_SUCCESS_BOUND = 1.5


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    async with TcpProxy(dbs.PG_HOST, dbs.PG_PORT) as running:
        yield running


async def attempt(monitor: Monitor, cid: int) -> tuple[float, DatabaseError | None]:
    """One request: (seconds it took, the error or None). Fails the test if it hangs."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(HANG_BOUND):
            assert await monitor.run(cid, "SELECT 1") == 1
        error = None
    except DatabaseError as exc:
        error = exc
    except TimeoutError:
        pytest.fail(f"a request hung for more than {HANG_BOUND} s")
    return loop.time() - started, error


async def seconds_until(monitor: Monitor, cid: int, state: str, *, within: float) -> float:
    """Poll pool-status every 50 ms until the pool's state is ``state``; the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(within):
        while (entry := await monitor.entry(cid)) is None or entry["state"] != state:
            await asyncio.sleep(0.05)
    return loop.time() - started


async def first_success_after(monitor: Monitor, cid: int) -> float:
    """Knock every 50 ms from now; the seconds until a request succeeds."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, error = await eventually(lambda: attempt(monitor, cid), lambda r: r[1] is None, within=10)
    assert error is None
    return loop.time() - started


async def test_cut_fails_fast_then_the_first_request_after_restore_succeeds(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = monitor_settings(health_check_interval_seconds=1)
    assert settings.probe_max_interval_seconds == 1.0  # the default cap, not a test's
    async with monitored(settings) as monitor:
        cid = monitor.register(
            pg_config(port=proxy.port, max_connections=3, connection_timeout=CONNECTION_TIMEOUT)
        )
        assert (await attempt(monitor, cid))[1] is None
        loop = asyncio.get_running_loop()
        proxy.cut()
        cut_at = loop.time()

        # First requests fail, each within connection_timeout, until the circuit opens.
        first: list[tuple[float, DatabaseError | None]] = []
        while len(first) < 10:
            first.append(await attempt(monitor, cid))
            entry = await monitor.entry(cid)
            if entry is not None and entry["state"] == "circuit_open":
                break
        assert all(isinstance(error, DbUnavailable) for _, error in first), first
        assert all(took <= CONNECTION_TIMEOUT + 0.5 for took, _ in first), first

        # Then fast: DB_UNAVAILABLE with a Retry-After no longer than the probe cap.
        fast = [await attempt(monitor, cid) for _ in range(20)]
        for _, error in fast:
            assert isinstance(error, DbUnavailable) and error.code == "DB_UNAVAILABLE"
            assert error.retry_after is not None and 0 <= error.retry_after <= 1.0
        assert statistics.median(took for took, _ in fast) < 0.020
        entry = await monitor.entry(cid)
        assert entry is not None
        assert (entry["state"], entry["healthy"]) == ("circuit_open", False)
        assert entry["lastProbeError"] == "DB_UNAVAILABLE" and entry["nextProbeAt"] is not None
        assert entry["stats"]["connectErrors"] >= 3 and entry["stats"]["queryErrors"] == 0
        samples = await monitor.metric_samples()
        mine = {n: v for n, lb, v in samples if lb.get("connection_id") == str(cid)}
        assert mine["dbpool_circuit_open"] == 1
        assert mine["dbpool_connect_errors_total"] >= 3

        # Keep knocking for 10 s of outage: every answer is fast, Retry-After stays capped.
        while loop.time() - cut_at < 10:
            took, error = await attempt(monitor, cid)
            assert isinstance(error, DbUnavailable) and error.retry_after is not None
            # fast: far below connection_timeout (a loaded shared machine can stall a beat)
            assert error.retry_after <= 1.0 and took < CONNECTION_TIMEOUT / 2
            await asyncio.sleep(0.25)

        proxy.restore()
        assert await first_success_after(monitor, cid) <= FIRST_SUCCESS_BOUND
        entry = await monitor.entry(cid)
        assert entry is not None and (entry["state"], entry["healthy"]) == ("ok", True)
        assert (entry["nextProbeAt"], entry["lastProbeError"]) == (None, None)
    assert PASSWORD not in caplog.text


async def test_idle_pools_recover_as_fast_after_a_long_cut_as_after_a_short_one() -> None:
    # Two pools, each behind its own proxy, no requests during the outages: one cut for 2 s,
    # one for 10 s, at the same time. Each returns to `ok` in pool-status within 1.5 s of its
    # restore (the default 1 s cap): a longer outage does not make recovery slower.
    settings = monitor_settings(health_check_interval_seconds=1)
    async with AsyncExitStack() as stack, monitored(settings) as monitor:
        proxies = [await stack.enter_async_context(TcpProxy(dbs.PG_HOST, dbs.PG_PORT))
                   for _ in range(2)]  # fmt: skip
        cids = [monitor.register(pg_config(port=p.port, connection_timeout=CONNECTION_TIMEOUT))
                for p in proxies]  # fmt: skip
        for cid in cids:
            assert (await attempt(monitor, cid))[1] is None

        async def outage(proxy: TcpProxy, cid: int, seconds: float) -> tuple[float, float]:
            proxy.cut()
            # The monitor notices without any request: its check cannot connect.
            await seconds_until(monitor, cid, "circuit_open", within=settings.
                                health_check_interval_seconds * 1.1 + CONNECTION_TIMEOUT + 1)
            await asyncio.sleep(seconds - 0.1)
            entry = await monitor.entry(cid)
            assert entry is not None and entry["state"] == "circuit_open"
            assert entry["lastHealthCheckAt"] is not None
            # The probe runs on its own schedule: the next one is due within the cap.
            due = datetime.fromisoformat(entry["nextProbeAt"].replace("Z", "+00:00"))
            assert (due - datetime.now(UTC)).total_seconds() <= 1.0 + 0.1
            proxy.restore()
            back = await seconds_until(monitor, cid, "ok", within=10)
            first = await first_success_after(monitor, cid)
            return back, first

        (short, short_first), (long, long_first) = await asyncio.gather(
            outage(proxies[0], cids[0], 2.0), outage(proxies[1], cids[1], 10.0)
        )
        assert short <= STATUS_BOUND and long <= STATUS_BOUND, (short, long)
        assert short_first < 0.5 and long_first < 0.5  # the circuit is already closed
        for cid in cids:
            entry = await monitor.entry(cid)
            assert entry is not None and (entry["state"], entry["healthy"]) == ("ok", True)
            assert entry["stats"]["queryErrors"] == 0
            assert await pg_count(cid) <= entry["maxConnections"]


async def test_stalled_network_never_hangs_a_request(proxy: TcpProxy) -> None:
    settings = monitor_settings(health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(
            pg_config(port=proxy.port, max_connections=2, connection_timeout=CONNECTION_TIMEOUT)
        )
        assert (await attempt(monitor, cid))[1] is None
        proxy.stall()
        # Five concurrent requests on a pool of 2: each ends within its bound, none hangs.
        results = await asyncio.gather(*(attempt(monitor, cid) for _ in range(5)))
        assert all(error is not None for _, error in results), results
        proxy.restore()
        loop = asyncio.get_running_loop()
        restored_at = loop.time()
        await eventually(lambda: attempt(monitor, cid), lambda r: r[1] is None, within=2 + 30)
        assert loop.time() - restored_at <= 2 + 30


async def test_an_idle_pool_follows_a_stalled_network_back(proxy: TcpProxy) -> None:
    # A black-holed network (connects hang rather than fail) is an unreachable database too:
    # the monitor's check times out inside the pool, which opens the circuit instead of
    # rebuilding the pool round after round, and the probe follows the network back.
    settings = monitor_settings(health_check_interval_seconds=1)
    async with monitored(settings) as monitor:
        cid = monitor.register(pg_config(port=proxy.port, connection_timeout=CONNECTION_TIMEOUT))
        assert (await attempt(monitor, cid))[1] is None
        proxy.stall()
        # One monitor round, its check's bound on the stalled link, SQLAlchemy's graceful close
        # of that connection and a connect attempt: how soon it opens is not the point here.
        await seconds_until(monitor, cid, "circuit_open", within=1.1 + 3 * CONNECTION_TIMEOUT + 3)
        await asyncio.sleep(3)
        entry = await monitor.entry(cid)
        assert entry is not None and entry["state"] == "circuit_open"
        assert entry["stats"]["recreations"] == 0  # not rebuilt: nothing was wrong with it
        proxy.restore()
        assert await seconds_until(monitor, cid, "ok", within=10) <= STATUS_BOUND
        assert await first_success_after(monitor, cid) < 0.5
