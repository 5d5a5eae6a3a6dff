"""Prober with a fake clock and sleep: it probes on the breaker's schedule, survives a
failing attempt, stops when the circuit closes, and ``aclose()`` ends it."""

from __future__ import annotations

import asyncio

from app.errors import DbUnavailable
from app.pools.breaker import CircuitBreaker
from app.pools.probe import Prober


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds
        await asyncio.sleep(0)


def tripped(clock: Clock) -> CircuitBreaker:
    breaker = CircuitBreaker("dbpool:1", clock=clock, rng=lambda: 0.0)
    breaker.record_failure(DbUnavailable("down"), trip=True)
    return breaker


async def test_probes_on_schedule_until_one_succeeds() -> None:
    clock = Clock()
    breaker = tripped(clock)
    outcomes = [False, False, False, False, False, False, True]

    async def attempt() -> None:
        if outcomes.pop(0):
            breaker.record_success()
        else:
            breaker.record_failure(DbUnavailable("still down"))

    prober = Prober(breaker, attempt, name="dbpool:1", clock=clock, sleep=clock.sleep)
    prober.start()
    async with asyncio.timeout(5):
        while prober.running:
            await asyncio.sleep(0)
    assert not breaker.is_open and prober.attempts == 7
    assert clock.slept == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]


async def test_a_failing_attempt_does_not_end_probing_nor_spin(caplog: object) -> None:
    clock = Clock()
    breaker = tripped(clock)
    calls = 0

    async def attempt() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("a bug")
        breaker.record_success()

    prober = Prober(breaker, attempt, name="dbpool:1", clock=clock, sleep=clock.sleep)
    prober.start()
    async with asyncio.timeout(5):
        while prober.running:
            await asyncio.sleep(0)
    assert calls == 3 and not breaker.is_open
    assert all(delay > 0 for delay in clock.slept)  # postponed, never a busy loop


async def test_aclose_stops_a_prober_waiting_for_its_next_probe() -> None:
    breaker = CircuitBreaker("dbpool:1")
    breaker.record_failure(DbUnavailable("down"), trip=True)

    async def attempt() -> None:
        breaker.record_failure(DbUnavailable("still down"))

    prober = Prober(breaker, attempt, name="dbpool:1", clock=asyncio.get_running_loop().time)
    prober.start()
    prober.start()  # idempotent
    assert prober.running
    async with asyncio.timeout(2):
        await prober.aclose()
    assert not prober.running and "running=False" in repr(prober)
