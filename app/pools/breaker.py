"""A circuit breaker for one pool's connect attempts.

closed ──(3 consecutive connect failures, or a failed health-check connect)──> open
  ^                                                                           │
  └──── a probe (or any connect) succeeds ─────── probe fails: next one later ┘

While open, ``check()`` fails fast with the error that opened it and a ``retry_after`` that
says when the next probe is due; requests never probe. The probes run in the background on
the breaker's schedule (``probe.Prober``), idle pools included: 0.1 s doubling to
``DBPOOL_PROBE_MAX_INTERVAL_SECONDS`` (1 s), jittered downwards only so the cap is a real
bound; the database is followed back within that cap whatever the outage's length.
Refused credentials are a state of their own (``auth_failed``) probed at the slow
``DBPOOL_AUTH_RETRY_INTERVAL_SECONDS`` cadence, so retries cannot get the account locked.
Statement failures are not connect failures: never record them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.errors import DatabaseError, DbAuthFailed, DbUnavailable

__all__ = ["Backoff", "CircuitBreaker"]

log = logging.getLogger(__name__)

FIRST_PROBE_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff, jittered downwards (never past ``cap``)."""

    base: float
    cap: float
    jitter: float = 0.2

    def delay(self, level: int, rng: Callable[[], float]) -> float:
        raw = min(self.cap, self.base * 2.0 ** min(level, 32))
        return raw * (1 - self.jitter * rng())


class CircuitBreaker:
    """Counts consecutive connect failures of one pool; fails fast while open."""

    def __init__(
        self,
        name: str,
        *,
        probe_max_interval: float = 1.0,
        auth_retry_interval: float = 30.0,
        threshold: int = 3,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._name = name
        self._threshold = threshold
        self._clock = clock
        self._rng = rng
        self._backoffs = {
            False: Backoff(min(FIRST_PROBE_SECONDS, probe_max_interval), probe_max_interval),
            True: Backoff(auth_retry_interval, auth_retry_interval),
        }
        self._failures = 0  # consecutive connect failures of either kind
        self._level = 0
        self._next_probe_at: float | None = None  # None while closed
        self._last_error: DatabaseError | None = None

    @property
    def is_open(self) -> bool:
        return self._next_probe_at is not None

    @property
    def auth_failed(self) -> bool:
        """Open because the database refused the credentials."""
        return self.is_open and isinstance(self._last_error, DbAuthFailed)

    @property
    def next_probe_at(self) -> float | None:
        """When the next probe is due (the breaker's clock), or None while closed."""
        return self._next_probe_at

    @property
    def last_error_code(self) -> str | None:
        """The code of the last connect failure since the circuit last closed."""
        return None if self._last_error is None else self._last_error.code

    def check(self) -> None:
        """Let an attempt through while closed; raise the fast failure while open."""
        if self._next_probe_at is not None:
            raise self._fast_failure(max(0.0, self._next_probe_at - self._clock()))

    def record_success(self) -> None:
        """A connection was obtained: close the circuit and forget past failures."""
        if self._failures == 0 and self._next_probe_at is None:
            return  # the hot path: every checkout reports success
        was_open = self._next_probe_at is not None
        self._failures = self._level = 0
        self._next_probe_at = None
        self._last_error = None
        if was_open:
            log.info("circuit closed", extra={"pool": self._name})

    def record_failure(self, error: DatabaseError, *, trip: bool = False) -> bool:
        """A connect attempt failed with ``error`` (already translated). ``trip`` opens the
        circuit at once (the monitor's own check failed). True when this call opened it."""
        self._failures += 1
        self._last_error = error
        if self._next_probe_at is not None:  # a probe failed: the next one a little later
            self._level += 1
            self._schedule()
            return False
        if trip or self._failures >= self._threshold:
            self._level = 0
            delay = self._schedule()
            log.warning("circuit opened", extra={
                "pool": self._name, "code": error.code, "next_probe_in_s": round(delay, 2),
            })  # fmt: skip
            return True
        return False

    def postpone(self) -> None:
        """No probe could be made this time (no free slot, a bug): try again one step later."""
        if self._next_probe_at is not None:
            self._schedule()

    def _schedule(self) -> float:
        backoff = self._backoffs[isinstance(self._last_error, DbAuthFailed)]
        delay = backoff.delay(self._level, self._rng)
        self._next_probe_at = self._clock() + delay
        return delay

    def _fast_failure(self, retry_after: float) -> DatabaseError:
        retry = round(retry_after, 3)
        if isinstance(self._last_error, DbAuthFailed):
            # Keep reporting the real cause: the credentials, not the network.
            return DbAuthFailed(
                f"{self._last_error.message} (next attempt in {retry:g} s; fix the "
                "registered username/password with PATCH)",
                details={**self._last_error.details, "circuitOpen": True},
                retry_after=retry,
            )
        return DbUnavailable(
            f"The database is unavailable (circuit open; next attempt in {retry:g} s)",
            details={"circuitOpen": True},
            retry_after=retry,
        )

    def __repr__(self) -> str:
        state = "auth_failed" if self.auth_failed else "open" if self.is_open else "closed"
        return f"<CircuitBreaker {self._name} state={state} failures={self._failures}>"
