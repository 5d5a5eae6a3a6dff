"""The background probe of one open circuit: one real connect whenever the breaker says the
next probe is due, forever, until one succeeds (which closes the circuit).

Why a task per open circuit rather than a step of the housekeeper: the housekeeper's period
is the health-check interval (60 s by default), while a circuit must follow its database
back within ``DBPOOL_PROBE_MAX_INTERVAL_SECONDS`` (1 s). A task that exists only while its
circuit is open starts the moment the circuit opens (no waiting for the next round), costs
nothing while every circuit is closed, and is stopped by its pool's ``aclose()`` (the pool
owns it: symmetric lifecycle). Like the housekeeper it never dies: each attempt catches its
own failures; it reads the breaker's monotonic clock, and its sleep is injectable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from app.pools.breaker import CircuitBreaker

__all__ = ["Prober"]

log = logging.getLogger(__name__)


class Prober:
    """Runs ``attempt`` on ``breaker``'s schedule while it is open; ``start()`` / ``aclose()``.

    ``attempt`` makes one connect and records its outcome on the breaker itself."""

    def __init__(
        self,
        breaker: CircuitBreaker,
        attempt: Callable[[], Awaitable[None]],
        *,
        name: str,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._breaker = breaker
        self._attempt = attempt
        self._name = name
        self._clock = clock
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None
        self.attempts = 0

    def __repr__(self) -> str:
        return f"<Prober {self._name} running={self.running} attempts={self.attempts}>"

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Probe until the circuit closes (idempotent; needs a running loop)."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(
                self._loop(), name=f"{self._name}-probe"
            )

    async def aclose(self) -> None:
        """Stop probing and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def _loop(self) -> None:
        while (due := self._breaker.next_probe_at) is not None:
            await self._sleep(max(0.0, due - self._clock()))
            if self._breaker.next_probe_at is None:
                return  # a request's or the monitor's connect closed it meanwhile
            self.attempts += 1
            try:
                await self._attempt()
            except Exception as exc:  # never dies: a bug in one attempt must not end probing
                log.warning("circuit probe failed unexpectedly",
                            extra={"pool": self._name, "error": type(exc).__name__})
            next_due = self._breaker.next_probe_at
            if next_due is not None and next_due <= self._clock():
                self._breaker.postpone()  # the attempt recorded nothing: no busy loop
