"""CircuitBreaker with a fake clock and a fixed rng: opening, backoff, probes, closing."""

from __future__ import annotations

import pytest

from app.errors import DbAuthFailed, DbUnavailable
from app.pools.breaker import Backoff, BreakerState, CircuitBreaker


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(rng: float = 0.5) -> tuple[CircuitBreaker, FakeClock]:
    clock = FakeClock()
    return CircuitBreaker("dbpool:1", clock=clock, rng=lambda: rng), clock


def down() -> DbUnavailable:
    return DbUnavailable("refused", retry_after=1.0)


def test_opens_after_three_consecutive_connect_failures() -> None:
    breaker, _ = make()
    for _ in range(2):
        assert breaker.check() is False
        breaker.record_failure(down())
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(down())
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(DbUnavailable) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(1.0)
    assert info.value.details["circuitOpen"] is True


def test_a_success_resets_the_count() -> None:
    breaker, _ = make()
    breaker.record_failure(down())
    breaker.record_failure(down())
    breaker.record_success()
    breaker.record_failure(down())
    breaker.record_failure(down())
    assert breaker.state is BreakerState.CLOSED


def test_one_probe_after_backoff_then_close_on_success() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure(down())
    clock.now += 0.99
    with pytest.raises(DbUnavailable):
        breaker.check()
    clock.now += 0.02
    assert breaker.check() is True  # the probe
    assert breaker.state is BreakerState.HALF_OPEN
    with pytest.raises(DbUnavailable):  # only one probe at a time
        breaker.check()
    breaker.record_success()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.check() is False


def test_backoff_doubles_to_the_cap_forever() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure(down())
    delays = []
    for _ in range(10):
        with pytest.raises(DbUnavailable) as info:
            breaker.check()
        assert info.value.retry_after is not None
        delays.append(info.value.retry_after)
        clock.now += info.value.retry_after
        assert breaker.check() is True
        breaker.record_failure(down())
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]


@pytest.mark.parametrize(("rng", "factor"), [(0.0, 0.8), (0.999999, 1.2)])
def test_jitter_is_twenty_percent(rng: float, factor: float) -> None:
    assert Backoff(1.0, 30.0).delay(2, lambda: rng) == pytest.approx(4 * factor, rel=1e-4)


def test_auth_failures_back_off_longer_and_keep_their_error() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure(DbAuthFailed("The database refused the credentials"))
    with pytest.raises(DbAuthFailed) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(5.0)
    clock.now += 5
    assert breaker.check() is True
    breaker.record_failure(DbAuthFailed("The database refused the credentials"))
    with pytest.raises(DbAuthFailed) as info:
        breaker.check()
    assert info.value.retry_after == pytest.approx(10.0)


def test_auth_and_network_failures_count_separately() -> None:
    breaker, _ = make()
    breaker.record_failure(DbAuthFailed("no"))
    breaker.record_failure(DbAuthFailed("no"))
    breaker.record_failure(down())
    breaker.record_failure(down())
    assert breaker.state is BreakerState.CLOSED
    breaker.record_failure(down())
    assert breaker.state is BreakerState.OPEN


def test_a_released_probe_lets_the_next_attempt_probe() -> None:
    breaker, clock = make()
    for _ in range(3):
        breaker.record_failure(down())
    clock.now += 2
    assert breaker.check() is True
    breaker.release_probe()
    assert breaker.check() is True


def test_repr_shows_state() -> None:
    breaker, _ = make()
    breaker.record_failure(down())
    assert repr(breaker) == "<CircuitBreaker dbpool:1 state=closed failures=1 auth_failures=0>"

