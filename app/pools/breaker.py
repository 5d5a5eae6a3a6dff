"""A circuit breaker for one pool's connect attempts.

closed ──(3 consecutive connect failures)──> open ──(backoff elapsed)──> one probe
  ^                                            ^                          │
  └────────────── probe succeeds ──────────────┴──── probe fails (backoff doubles)

While open, ``check()`` fails fast with the error that opened it and a ``retry_after``.
Backoff: 1 s doubling to 30 s, ±20 % jitter, forever. Authentication failures count
separately and back off longer (5 s doubling to 300 s) so retries cannot get the
database account locked. Statement failures are not connect failures: never record them.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import DatabaseError, DbAuthFailed, DbUnavailable

__all__ = ["Backoff", "BreakerState", "CircuitBreaker"]

log = logging.getLogger(__name__)


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"  # a probe is in flight


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with proportional jitter."""

    base: float
    cap: float
    jitter: float = 0.2

    def delay(self, level: int, rng: Callable[[], float]) -> float:
        raw = min(self.cap, self.base * 2.0 ** min(level, 32))
        return raw * (1 + self.jitter * (2 * rng() - 1))


CONNECT_BACKOFF = Backoff(1.0, 30.0)
AUTH_BACKOFF = Backoff(5.0, 300.0)


class CircuitBreaker:
    """Counts consecutive connect failures of one pool; fails fast while open."""

    def __init__(
        self,
        name: str,
        *,
        threshold: int = 3,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
        connect_backoff: Backoff = CONNECT_BACKOFF,
        auth_backoff: Backoff = AUTH_BACKOFF,
    ) -> None:
        self._name = name
        self._threshold = threshold
        self._clock = clock
        self._rng = rng
        self._backoffs = {False: connect_backoff, True: auth_backoff}
        self._failures = {False: 0, True: 0}  # consecutive, keyed by "is auth failure"
        self._level = 0
        self._open_until: float | None = None
        self._probing = False
        self._last_error: DatabaseError | None = None

    @property
    def state(self) -> BreakerState:
        if self._open_until is None:
            return BreakerState.CLOSED
        return BreakerState.HALF_OPEN if self._probing else BreakerState.OPEN

    @property
    def is_open(self) -> bool:
        return self._open_until is not None

    def check(self) -> bool:
        """Let an attempt through, or raise. Returns True when the attempt is THE probe:
        the caller must then record its outcome or call ``release_probe()``."""
        if self._open_until is None:
            return False
        remaining = self._open_until - self._clock()
        if remaining <= 0 and not self._probing:
            self._probing = True
            return True
        # While a probe is in flight, others fail fast too; suggest a short retry.
        raise self._fast_failure(remaining if remaining > 0 else 1.0)

    def record_success(self) -> None:
        """A connection was obtained: close the circuit and forget past failures."""
        was_open = self._open_until is not None
        self._failures = {False: 0, True: 0}
        self._level = 0
        self._open_until = None
        self._probing = False
        self._last_error = None
        if was_open:
            log.info("circuit closed", extra={"pool": self._name})

    def record_failure(self, error: DatabaseError) -> None:
        """A connect attempt failed with ``error`` (already translated)."""
        auth = isinstance(error, DbAuthFailed)
        self._failures[auth] += 1
        self._failures[not auth] = 0
        self._last_error = error
        if self._open_until is not None:
            if self._probing:  # the probe failed: back off further
                self._probing = False
                self._level += 1
                self._open(auth)
            return
        if self._failures[auth] >= self._threshold:
            self._level = 0
            self._open(auth)

    def release_probe(self) -> None:
        """The probe ended without reaching the database (cancelled): allow another."""
        self._probing = False

    def _open(self, auth: bool) -> None:
        delay = self._backoffs[auth].delay(self._level, self._rng)
        self._open_until = self._clock() + delay
        log.warning(
            "circuit opened",
            extra={"pool": self._name, "retry_in_s": round(delay, 2), "auth_failure": auth},
        )

    def _fast_failure(self, retry_after: float) -> DatabaseError:
        retry = round(retry_after, 3)
        if isinstance(self._last_error, DbAuthFailed):
            # Keep reporting the real cause: the credentials, not the network.
            return DbAuthFailed(
                f"{self._last_error.message} (not retried for {retry:g} s)",
                details={**self._last_error.details, "circuitOpen": True},
                retry_after=retry,
            )
        return DbUnavailable(
            f"The database is unavailable (circuit open; next attempt in {retry:g} s)",
            details={"circuitOpen": True},
            retry_after=retry,
        )

    def __repr__(self) -> str:
        return (
            f"<CircuitBreaker {self._name} state={self.state} "
            f"failures={self._failures[False]} auth_failures={self._failures[True]}>"
        )
