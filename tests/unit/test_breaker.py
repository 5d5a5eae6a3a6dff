"""CircuitBreaker with a fake clock and a fixed rng: opening, fast failures, the probe
schedule (capped low whatever the outage's length), auth failures on their own cadence."""

from __future__ import annotations

import pytest

from app.errors import DbAuthFailed, DbUnavailable
from app.pools.breaker import Backoff, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    rng: float = 0.0, cap: float = 1.0, auth: float = 30.0
) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    breaker = CircuitBreaker("dbpool:1", probe_max_interval=cap, auth_retry_interval=auth,
                             clock=clock, rng=lambda: rng)
    return breaker, clock


def down() -> DbUnavailable:
    return DbUnavailable("refused", retry_after=1.0)


def refused() -> DbAuthFailed:
    return DbAuthFailed("The database refused the credentials")


def due_in(breaker: CircuitBreaker, clock: FakeClock) -> float:
    assert breaker.next_probe_at is not None
    return breaker.next_probe_at - clock.now


def test_opens_after_three_consecutive_connect_failures_and_fails_fast() -> None:
    breaker, clock = make()
    for _ in range(2):
        breaker.check()
        assert breaker.record_failure(down()) is False
    assert not breaker.is_open and breaker.next_probe_at is None
    assert breaker.record_failure(down()) is True
    assert breaker.is_open and not breaker.auth_failed
    with pytest.raises(DbUnavailable) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(0.1)
    assert info.value.details["circuitOpen"] is True
    assert breaker.last_error_code == "DB_UNAVAILABLE"
    clock.now += 5  # requests never probe: still failing fast after the probe was due
    with pytest.raises(DbUnavailable):
        breaker.check()


def test_a_failed_check_trips_at_once() -> None:
    breaker, _ = make()
    assert breaker.record_failure(down(), trip=True) is True
    assert breaker.is_open


def test_a_success_resets_the_count_and_closes() -> None:
    breaker, _ = make()
    breaker.record_failure(down())
    breaker.record_failure(down())
    breaker.record_success()
    breaker.record_failure(down())
    breaker.record_failure(down())
    assert not breaker.is_open
    breaker.record_failure(down())
    breaker.record_success()
    assert not breaker.is_open and breaker.last_error_code is None
    breaker.check()


def test_probe_interval_backs_off_to_the_cap_and_stays_there() -> None:
    breaker, clock = make(cap=1.0)
    for _ in range(3):
        breaker.record_failure(down())
    delays = [due_in(breaker, clock)]
    for _ in range(600):  # a ten-minute outage's worth of probes
        clock.now = breaker.next_probe_at or clock.now
        breaker.record_failure(down())
        delays.append(due_in(breaker, clock))
    assert delays[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert max(delays) == pytest.approx(1.0)


@pytest.mark.parametrize(("rng", "factor"), [(0.0, 1.0), (0.999999, 0.8)])
def test_jitter_only_shortens_so_the_cap_holds(rng: float, factor: float) -> None:
    assert Backoff(0.1, 1.0).delay(10, lambda: rng) == pytest.approx(factor, rel=1e-4)


def test_auth_failures_have_their_own_state_and_slow_cadence() -> None:
    breaker, clock = make(auth=30.0)
    for _ in range(3):
        breaker.record_failure(refused())
    assert breaker.auth_failed and breaker.last_error_code == "DB_AUTH_FAILED"
    with pytest.raises(DbAuthFailed) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(30.0)
    assert "PATCH" in info.value.message
    clock.now += 30
    breaker.record_failure(refused())
    assert due_in(breaker, clock) == pytest.approx(30.0)
    clock.now += 30
    breaker.record_failure(down())  # the credentials pass now, the network does not
    assert not breaker.auth_failed and due_in(breaker, clock) <= 1.0


def test_postpone_reschedules_an_open_circuit_only() -> None:
    breaker, clock = make()
    breaker.postpone()
    assert breaker.next_probe_at is None
    breaker.record_failure(down(), trip=True)
    clock.now += 10
    breaker.postpone()
    assert due_in(breaker, clock) == pytest.approx(0.1)


def test_repr_shows_state() -> None:
    breaker, _ = make()
    breaker.record_failure(down())
    assert repr(breaker) == "<CircuitBreaker dbpool:1 state=closed failures=1>"
    breaker.record_failure(refused(), trip=True)
    assert repr(breaker) == "<CircuitBreaker dbpool:1 state=auth_failed failures=2>"
