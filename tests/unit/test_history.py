"""The pool history: the ring buffer, the rate / p99 derivation and the sampler's loop, with
fake pools, fake counters and a fake clock (the real service is in tests/e2e/test_dashboard.py)."""

from __future__ import annotations

import asyncio
import math
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.pools.history import (
    COLUMNS,
    HistoryRing,
    HistorySampler,
    interval_rates,
    wait_quantile,
)
from app.pools.metrics import TIME_BUCKETS, PoolCounters
from app.pools.stats import PoolSnapshot, PoolStats

NOW = datetime(2025, 1, 13, 10, 0, tzinfo=UTC)
BUCKETS = len(TIME_BUCKETS) + 1


def snapshot(cid: int, **changes: object) -> PoolSnapshot:
    snap = PoolSnapshot(
        connection_id=cid, connection_name=f"c{cid}", db_type="postgresql",
        pool_name=f"dbpool:{cid}", checked_out=2, checked_in=3, max_connections=10,
        min_connections=0, waiting=1, state="ok", healthy=True, last_health_check_at=None,
        created_at=NOW, last_used_at=NOW, idle_seconds=0.0, stats=PoolStats(),
    )  # fmt: skip
    return replace(snap, **changes)  # type: ignore[arg-type]


def waits(**by_bound: int) -> tuple[int, ...]:
    """Bucket counts from keywords: ``b0_01=3`` counts 3 in the bucket up to 0.01 s."""
    counts = [0] * BUCKETS
    for key, count in by_bound.items():
        bound = key[1:].replace("_", ".")
        index = BUCKETS - 1 if key == "inf" else TIME_BUCKETS.index(float(bound))
        counts[index] = count
    return tuple(counts)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


class Pools:
    def __init__(self, *snaps: PoolSnapshot) -> None:
        self.snaps = list(snaps)
        self.fail = False

    def snapshots(self) -> list[PoolSnapshot]:
        if self.fail:
            raise RuntimeError("boom")
        return list(self.snaps)


class Counters:
    def __init__(self) -> None:
        self.by_id: dict[int, PoolCounters] = {}

    def counters(self, connection_id: int) -> PoolCounters:
        return self.by_id.get(connection_id, PoolCounters())


# ---- the ring --------------------------------------------------------------------------


def row(i: float) -> tuple[float, ...]:
    return (i,) * len(COLUMNS)


def test_ring_keeps_the_last_capacity_samples_oldest_first() -> None:
    ring = HistoryRing(3)
    assert len(ring) == 0 and ring.columns()["open"] == []
    for i in range(1, 6):
        ring.append(row(i))
    assert len(ring) == 3
    assert ring.columns()["at"] == [3.0, 4.0, 5.0]
    assert ring.columns()["waiting"] == [3, 4, 5]
    assert ring.columns(since=4.0)["active"] == [4, 5]
    assert repr(ring) == "<HistoryRing 3/3>"


def test_ring_age_filter_across_the_wrap() -> None:
    ring = HistoryRing(4)
    for i in range(1, 7):  # slots now hold 5, 6, 3, 4
        ring.append(row(i))
    assert ring.columns(since=3)["at"] == [3, 4, 5, 6]
    assert ring.columns(since=4)["at"] == [4, 5, 6]
    assert ring.columns(since=5)["open"] == [5, 6]
    assert ring.columns(since=7)["at"] == []


def test_ring_memory_is_fixed_from_the_start() -> None:
    ring = HistoryRing(180)
    empty = ring.nbytes
    for i in range(1000):
        ring.append(row(i))
    assert ring.nbytes == empty
    # 9 columns, 8 + 5 * 4 + 3 * 8 bytes a sample, plus the objects' headers
    assert 180 * 52 <= empty < 180 * 52 + 2048


def test_ring_refuses_zero_capacity() -> None:
    with pytest.raises(ValueError):
        HistoryRing(0)


# ---- the derivation ----------------------------------------------------------------------


def test_wait_quantile_interpolates_inside_the_bucket() -> None:
    assert wait_quantile(waits(), 0.99) is None
    # 100 waits all in (0.005, 0.01]: p99 = 0.005 + 0.005 * 99/100
    assert wait_quantile(waits(b0_01=100), 0.99) == pytest.approx(0.00995)
    # 99 fast, 1 slow: the 99th rank is still in the first bucket
    assert wait_quantile(waits(b0_001=99, b1=1), 0.99) == pytest.approx(0.001)
    # 98 fast, 2 slow: it falls into (0.5, 1]
    assert wait_quantile(waits(b0_001=98, b1=2), 0.99) == pytest.approx(0.75)
    # beyond the last bound: reported as the last bound
    assert wait_quantile(waits(inf=5), 0.99) == TIME_BUCKETS[-1]


def test_interval_rates_from_counter_deltas() -> None:
    before = PoolCounters(queries=100, errors=4, wait_counts=waits(b0_001=100))
    now = PoolCounters(queries=150, errors=9, wait_counts=waits(b0_001=100, b0_1=50))
    rates = interval_rates(before, now, 5.0)
    assert rates.queries_per_second == pytest.approx(10.0)
    assert rates.errors_per_second == pytest.approx(1.0)
    # only this interval's 50 waits count, all in (0.05, 0.1]
    assert rates.wait_p99_seconds == pytest.approx(0.05 + 0.05 * 49.5 / 50)


def test_a_counter_that_went_backwards_restarts_from_zero() -> None:
    before = PoolCounters(queries=500, errors=50, wait_counts=waits(b0_01=500))
    now = PoolCounters(queries=20, errors=1, wait_counts=waits(b0_001=20))  # pool rebuilt
    rates = interval_rates(before, now, 2.0)
    assert rates.queries_per_second == pytest.approx(10.0)
    assert rates.errors_per_second == pytest.approx(0.5)
    assert rates.wait_p99_seconds == pytest.approx(0.00099)


def test_no_activity_means_zero_rates_and_no_p99() -> None:
    same = PoolCounters(queries=7, errors=0, wait_counts=waits(b0_001=7))
    rates = interval_rates(same, same, 5.0)
    assert (rates.queries_per_second, rates.errors_per_second) == (0.0, 0.0)
    assert rates.wait_p99_seconds is None


# ---- the sampler -------------------------------------------------------------------------


def sampler(pools: Pools, counters: Counters, clock: FakeClock, **kw: float) -> HistorySampler:
    return HistorySampler(pools, counters, clock=clock.monotonic, wall=clock.time, **kw)


def test_samples_hold_the_snapshot_figures_and_the_interval_rates() -> None:
    clock, pools, counters = FakeClock(), Pools(snapshot(1)), Counters()
    history = sampler(pools, counters, clock, period=5, window=60)
    assert history.capacity == 12
    counters.by_id[1] = PoolCounters(10, 0, waits(b0_001=10))
    history.sample_once()
    clock.advance(5)
    pools.snaps = [snapshot(1, checked_out=4, checked_in=1, waiting=0)]
    counters.by_id[1] = PoolCounters(60, 5, waits(b0_001=10, b0_01=50))
    history.sample_once()

    (pool,) = history.history()
    assert (pool.connection_id, pool.connection_name, pool.db_type) == (1, "c1", "postgresql")
    s = pool.samples
    assert s["at"] == [1_700_000_000_000, 1_700_000_005_000]  # epoch milliseconds
    assert (s["open"], s["active"], s["idle"]) == ([5, 5], [2, 4], [3, 1])
    assert (s["waiting"], s["max"]) == ([1, 0], [10, 10])
    assert math.isnan(s["queriesPerSecond"][0]) and math.isnan(s["waitP99Ms"][0])
    assert s["queriesPerSecond"][1] == pytest.approx(10.0)
    assert s["errorsPerSecond"][1] == pytest.approx(1.0)
    assert s["waitP99Ms"][1] == 9.95  # rounded to the microsecond when stored


def test_history_filters_by_pool_and_by_age() -> None:
    clock, pools = FakeClock(), Pools(snapshot(2), snapshot(1))
    history = sampler(pools, Counters(), clock, period=1, window=10)
    for _ in range(4):
        history.sample_once()
        clock.advance(1)
    assert [p.connection_id for p in history.history()] == [1, 2]
    assert [p.connection_id for p in history.history(2)] == [2]
    assert history.history(3) == []
    # now = start + 4; the last 2 s hold the samples taken at +2 and +3
    assert len(history.history(1, seconds=2.0)[0].samples["at"]) == 2


def test_a_pool_that_goes_loses_its_history_and_memory_stays_per_live_pool() -> None:
    clock, pools = FakeClock(), Pools(snapshot(1), snapshot(2))
    history = sampler(pools, Counters(), clock, period=5, window=900)
    history.sample_once()
    two = history.nbytes
    assert history.pools == 2 and two > 0
    for _ in range(500):  # far more than the capacity: memory does not grow
        history.sample_once()
    assert history.nbytes == two
    pools.snaps = [snapshot(2)]
    history.sample_once()
    assert [p.connection_id for p in history.history()] == [2]
    assert history.nbytes == two // 2


async def test_the_loop_never_dies_and_stops_on_aclose(caplog: pytest.LogCaptureFixture) -> None:
    clock, pools = FakeClock(), Pools(snapshot(1))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.advance(seconds)
        pools.fail = len(slept) == 2  # the third round raises
        await asyncio.sleep(0)

    history = HistorySampler(pools, Counters(), period=2.0, clock=clock.monotonic,
                             wall=clock.time, sleep=sleep)
    history.start()
    for _ in range(50):
        await asyncio.sleep(0)
        if history.rounds >= 4:
            break
    await history.aclose()
    assert history.rounds >= 4, "the loop stopped after a failing round"
    assert "pool history sample failed" in caplog.text
    assert all(s == pytest.approx(2.0) for s in slept)
    assert len(history.history()[0].samples["at"]) == history.rounds
