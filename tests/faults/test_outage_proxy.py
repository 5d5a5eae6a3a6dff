"""A database that goes away and comes back, seen through a TCP proxy the test controls,
with the housekeeper running: requests fail within connection_timeout, then fast (circuit
open) with DB_UNAVAILABLE, the monitor shows it, and service resumes soon after the restore.
No request ever hangs."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import AsyncIterator

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
)
from tests.support.proxy import TcpProxy

pytestmark = [pytest.mark.postgresql, pytest.mark.slow]

CONNECTION_TIMEOUT = 2.0
HANG_BOUND = CONNECTION_TIMEOUT + 3.0  # anything slower than this counts as a hang


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


async def test_cut_fails_fast_then_recovers_after_restore(
    proxy: TcpProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = monitor_settings(health_check_interval_seconds=1)
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

        # Then fast: DB_UNAVAILABLE with Retry-After, no round trip to the dead address.
        fast = [await attempt(monitor, cid) for _ in range(20)]
        for _, error in fast:
            assert isinstance(error, DbUnavailable) and error.code == "DB_UNAVAILABLE"
            assert error.retry_after is not None and error.retry_after > 0
        assert statistics.median(took for took, _ in fast) < 0.020
        entry = await monitor.entry(cid)
        assert entry is not None and entry["state"] == "circuit_open"
        samples = await monitor.metric_samples()
        circuit = [v for n, lb, v in samples
                   if n == "dbpool_circuit_open" and lb["connection_id"] == str(cid)]  # fmt: skip
        assert circuit == [1]

        # Keep knocking for ~10 s of outage; the probe keeps retrying with growing backoff.
        last_error: DatabaseError | None = None
        while loop.time() - cut_at < 10:
            _, last_error = await attempt(monitor, cid)
            assert last_error is not None
            await asyncio.sleep(0.25)
        backoff = last_error.retry_after if last_error is not None else None
        assert backoff is not None

        proxy.restore()
        restored_at = loop.time()
        await eventually(lambda: attempt(monitor, cid), lambda r: r[1] is None, within=2 + 30)
        assert loop.time() - restored_at <= 2 + backoff + 0.5
        entry = await monitor.entry(cid)
        assert entry is not None and entry["state"] in {"ok", "degraded"}
    assert PASSWORD not in caplog.text


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
