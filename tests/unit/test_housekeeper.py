"""The housekeeper's loop logic against fake pools and a fake clock (no database here: the
real-database behaviour is in tests/integration/test_monitor_*.py)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType
from app.errors import RegistryUnavailable
from app.logs import TextFormatter
from app.pools.housekeeper import Housekeeper
from app.pools.stats import PoolSnapshot, PoolState, PoolStats
from app.settings import Settings

NOW = datetime(2025, 1, 13, 10, 0, tzinfo=UTC)


def make_config(cid: int, *, timeout: float = 30.0) -> ConnectionConfig:
    return ConnectionConfig(
        id=cid, name=f"c{cid}", db_type=DbType.POSTGRESQL, host="127.0.0.1", port=5432,
        database="d", username="u", password=SecretStr("hunter2-secret"),
        max_connections=5, min_connections=1, connection_timeout=timeout,
    )  # fmt: skip


@dataclass
class FakePool:
    config: ConnectionConfig
    checked_out: int = 0
    checked_in: int = 1
    waiting: int = 0
    state: PoolState = "ok"
    idle: bool = False
    health: bool | None = True  # None: the check hangs forever
    health_error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            connection_id=self.config.id, connection_name=self.config.name, db_type="postgresql",
            pool_name=self.config.pool_name, checked_out=self.checked_out,
            checked_in=self.checked_in, max_connections=self.config.max_connections,
            min_connections=self.config.min_connections, waiting=self.waiting, state=self.state,
            healthy=True, last_health_check_at=None, created_at=NOW, last_used_at=NOW,
            idle_seconds=42.0, stats=PoolStats(),
        )  # fmt: skip

    async def health_check(self, within: float | None = None) -> bool:
        self.calls.append("health_check")
        if self.health_error is not None:
            raise self.health_error
        if self.health is None:
            await asyncio.Event().wait()
        return bool(self.health)

    async def trim_idle(self, idle_timeout: float) -> int:
        self.calls.append(f"trim_idle({idle_timeout})")
        return 0

    async def fill_min(self) -> int:
        self.calls.append("fill_min")
        return 0

    def is_idle(self, ttl: float) -> bool:
        return self.idle


@dataclass
class FakeManager:
    live: dict[int, FakePool] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    sync_error: Exception | None = None
    pools_error: Exception | None = None

    def pools(self) -> list[FakePool]:
        if self.pools_error is not None:
            raise self.pools_error
        return list(self.live.values())

    def snapshots(self) -> list[PoolSnapshot]:
        return [p.snapshot() for p in self.live.values()]

    async def sync_versions(self) -> None:
        self.events.append("sync")
        if self.sync_error is not None:
            raise self.sync_error

    async def evict(self, connection_id: int) -> None:
        self.events.append(f"evict {connection_id}")
        del self.live[connection_id]

    async def rebuild(self, connection_id: int) -> None:
        self.events.append(f"rebuild {connection_id}")
        old = self.live[connection_id]
        self.live[connection_id] = FakePool(old.config)


@dataclass
class FakeMetrics:
    evicted: list[int] = field(default_factory=list)
    retained: list[set[int]] = field(default_factory=list)

    def count_eviction(self, config: ConnectionConfig) -> None:
        self.evicted.append(config.id)

    def retain(self, live_ids: set[int]) -> None:
        self.retained.append(set(live_ids))


class FakeClock:
    """Monotonic time that only moves when the housekeeper sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def lines(caplog: pytest.LogCaptureFixture) -> str:
    """The captured records as the service's text format renders them (extras included)."""
    formatter = TextFormatter()
    return "\n".join(formatter.format(record) for record in caplog.records)


def settings(**overrides: float) -> Settings:
    values: dict[str, float] = {
        "health_check_interval_seconds": 1.0,
        "pool_idle_ttl_seconds": 3.0,
        "connection_idle_timeout_seconds": 2.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def manager_with(*pools: FakePool) -> FakeManager:
    return FakeManager(live={p.config.id: p for p in pools})


async def test_round_syncs_trims_fills_and_logs_status(caplog: pytest.LogCaptureFixture) -> None:
    busy = FakePool(make_config(1), checked_out=2, checked_in=1, waiting=0)
    quiet = FakePool(make_config(2), waiting=0)
    manager = manager_with(busy, quiet)
    caplog.set_level(logging.INFO, logger="app.pools.housekeeper")

    await Housekeeper(manager, settings()).run_once()

    assert manager.events == ["sync"]
    for pool in (busy, quiet):
        assert pool.calls == ["health_check", "trim_idle(2.0)", "fill_min"]
    assert "pools total=2 active=1 waiting=0" in lines(caplog)


async def test_idle_pool_with_nothing_checked_out_is_evicted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    idle = FakePool(make_config(1), idle=True)
    idle_but_in_use = FakePool(make_config(2), idle=True, checked_out=1)
    manager = manager_with(idle, idle_but_in_use)
    metrics = FakeMetrics()
    caplog.set_level(logging.INFO, logger="app.pools.housekeeper")

    await Housekeeper(manager, settings(), metrics=metrics).run_once()

    assert manager.events == ["sync", "evict 1"]
    assert idle.calls == []  # an evicted pool is not health-checked or filled
    assert metrics.evicted == [1]
    assert metrics.retained == [{2}]
    assert "idle pool evicted connection_id=1 idle_seconds=42" in lines(caplog)
    assert "pools total=1 active=1 waiting=0" in lines(caplog)


@pytest.mark.parametrize(
    "failure",
    [{"health": False}, {"health_error": OSError("connection reset")}],
    ids=["check-false", "check-raises"],
)
async def test_failed_health_check_rebuilds_the_pool(failure: dict[str, object]) -> None:
    sick = FakePool(make_config(7), **failure)  # type: ignore[arg-type]
    manager = manager_with(sick)

    await Housekeeper(manager, settings()).run_once()

    assert manager.events == ["sync", "rebuild 7"]  # the manager logs "unhealthy pool rebuilt"
    assert sick.calls == ["health_check"]  # no trim/fill on a pool being replaced


async def test_a_hanging_check_times_out_without_delaying_the_others() -> None:
    hung = FakePool(make_config(1, timeout=0.5), health=None)
    fine = FakePool(make_config(2))
    manager = manager_with(hung, fine)
    keeper = Housekeeper(manager, settings(health_check_interval_seconds=0.5))

    async with asyncio.timeout(5):  # generous bound: the check timeout is 0.5 s
        await keeper.run_once()

    assert manager.events == ["sync", "rebuild 1"]
    assert fine.calls == ["health_check", "trim_idle(2.0)", "fill_min"]


async def test_busy_and_circuit_open_pools_are_not_judged() -> None:
    saturated = FakePool(make_config(1), checked_out=5, checked_in=0, health=False)
    tripped = FakePool(make_config(2), state="circuit_open", health=False)
    manager = manager_with(saturated, tripped)

    await Housekeeper(manager, settings()).run_once()

    assert manager.events == ["sync"]
    assert saturated.calls == tripped.calls == []


async def test_a_failing_step_does_not_skip_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    pool = FakePool(make_config(1))
    manager = manager_with(pool)
    manager.sync_error = RuntimeError("registry down")

    await Housekeeper(manager, settings()).run_once()

    assert pool.calls == ["health_check", "trim_idle(2.0)", "fill_min"]
    assert "housekeeping step failed: sync versions" in lines(caplog)


async def test_an_unreachable_registry_is_one_warning_without_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = FakePool(make_config(1))
    manager = manager_with(pool)
    manager.sync_error = RegistryUnavailable("The registry database cannot be reached")

    await Housekeeper(manager, settings()).run_once()

    assert pool.calls == ["health_check", "trim_idle(2.0)", "fill_min"]  # pools untouched
    assert manager.events == ["sync"]  # nothing invalidated or rebuilt
    skipped = [r for r in caplog.records if "sync versions" in r.getMessage()]
    assert [(r.levelname, r.exc_info) for r in skipped] == [("WARNING", None)]
    assert "REGISTRY_UNAVAILABLE" in skipped[0].getMessage()


def test_period_comes_from_settings_and_jitter_is_ten_percent() -> None:
    manager = manager_with()
    assert Housekeeper(manager, settings(health_check_interval_seconds=60)).period == 60
    assert Housekeeper(manager, settings(), period=5).period == 5
    low = Housekeeper(manager, settings(health_check_interval_seconds=10), rng=lambda: 0.0)
    high = Housekeeper(manager, settings(health_check_interval_seconds=10), rng=lambda: 1.0)
    mid = Housekeeper(manager, settings(health_check_interval_seconds=10), rng=lambda: 0.5)
    assert low.next_delay() == pytest.approx(9.0)
    assert high.next_delay() == pytest.approx(11.0)
    assert mid.next_delay() == pytest.approx(10.0)


async def wait_for_rounds(keeper: Housekeeper, rounds: int) -> None:
    async with asyncio.timeout(5):
        while keeper.rounds < rounds:
            await asyncio.sleep(0)


async def test_loop_runs_on_the_injected_clock_and_stops_on_aclose() -> None:
    clock = FakeClock()
    manager = manager_with(FakePool(make_config(1)))
    keeper = Housekeeper(
        manager, settings(health_check_interval_seconds=10), clock=clock, sleep=clock.sleep,
        rng=lambda: 0.0,
    )  # fmt: skip
    keeper.start()
    keeper.start()  # idempotent: still one task
    await wait_for_rounds(keeper, 3)
    await keeper.aclose()

    assert clock.sleeps[:3] == [pytest.approx(9.0)] * 3
    assert "running=False" in repr(keeper)
    rounds = keeper.rounds
    await asyncio.sleep(0.01)
    assert keeper.rounds == rounds  # stopped for good


async def test_loop_survives_a_round_that_blows_up(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    manager = manager_with(FakePool(make_config(1)))
    manager.pools_error = RuntimeError("bug in the manager")
    keeper = Housekeeper(manager, settings(), clock=clock, sleep=clock.sleep)
    keeper.start()
    async with asyncio.timeout(5):
        while len(clock.sleeps) < 3:  # it keeps sleeping and retrying
            await asyncio.sleep(0)
    assert keeper.rounds == 0
    manager.pools_error = None  # the fault clears: the same task carries on
    await wait_for_rounds(keeper, 1)
    await keeper.aclose()
    assert any("housekeeping round failed" in m for m in caplog.messages)


async def test_a_slow_round_is_followed_at_once_and_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()

    class SlowManager(FakeManager):
        async def sync_versions(self) -> None:
            clock.now += 25  # this round takes 2.5 periods

    manager = SlowManager(live={1: FakePool(make_config(1))})
    keeper = Housekeeper(
        manager, settings(health_check_interval_seconds=10), clock=clock, sleep=clock.sleep,
        rng=lambda: 0.5,
    )  # fmt: skip
    keeper.start()
    await wait_for_rounds(keeper, 2)
    await keeper.aclose()
    assert clock.sleeps[:2] == [pytest.approx(10.0), 0.0]
    assert "round took longer than its period seconds=25.0 period=10.0" in lines(caplog)


async def test_no_log_line_carries_the_password(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    pools = [
        FakePool(make_config(1), idle=True),
        FakePool(make_config(2), health=False),
        FakePool(make_config(3), health_error=OSError("password=hunter2-secret refused")),
    ]
    await Housekeeper(manager_with(*pools), settings()).run_once()
    assert caplog.records
    assert "hunter2-secret" not in caplog.text
