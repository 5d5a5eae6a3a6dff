"""One registered connection's pool: a fair gate and a circuit breaker in front of one
``AsyncEngine``, whose connections a lender keeps checked out and lends to requests.

    request ─> breaker.check() ─> gate.acquire(connection_timeout) ─> lender.take()
                 (fail fast)        (FIFO; POOL_EXHAUSTED)              (idle, vouched for)
                                                                    or engine.connect()
                                                                        (ping / connect)

On return the session is reset on the driver connection and the connection goes back to
the lender's idle stack (``app.pools.lender``): SQLAlchemy's checkout and checkin run once
per connection lifetime, not per request. Counts: open connections from SQLAlchemy's pool
events, lent ones as the lender marks them (``accounting``).

While the circuit is open a ``Prober`` task owned by this pool makes one connect, in a free
slot, whenever the breaker says a probe is due; the first success closes the circuit.

The gate admits at most ``max_connections`` holders and the engine's pool has exactly
that many slots, so no request ever queues inside SQLAlchemy's (unfair) queue. A pool that
replaces another (config change, rebuild) shares its predecessor's gate, and a pool being
closed closes its idle connections at once (the lender's and SQLAlchemy's) and each lent
one as it comes back: the two generations together never hold more than ``max_connections``
connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.domain import ConnectionConfig
from app.errors import DatabaseError, DbAuthFailed, DbUnavailable, HostNotAllowed, PoolExhausted
from app.pools.accounting import IDLE_SINCE, PoolAccounting
from app.pools.allowlist import Resolve, system_resolve
from app.pools.breaker import CircuitBreaker
from app.pools.cancel import Canceller
from app.pools.drivers import adapter_of
from app.pools.engine_factory import build_engine
from app.pools.gate import FairGate, GateFull, GateTimeout
from app.pools.idle import IdleKeeper
from app.pools.lender import Lender
from app.pools.probe import Prober
from app.pools.queue_pool import TrimmableQueuePool
from app.pools.recorder import NOP, MetricsRecorder
from app.pools.session_reset import SessionReset, driver_closed, hygiene_timeout
from app.pools.stale import SentNothing
from app.pools.stats import PoolSnapshot, PoolState, PoolStats
from app.pools.translate import translate_error
from app.settings import Settings
from app.tracing import NO_TRACING, Tracing

__all__ = ["ManagedPool"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_DRAIN_POLL = 0.02


class ManagedPool:
    """Wraps one ``AsyncEngine``: bounded, fair, counted, self-healing."""

    def __init__(
        self,
        config: ConnectionConfig,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        recreations: int = 0,
        metrics: MetricsRecorder = NOP,
        on_refused: Callable[[ManagedPool], None] | None = None,
        resolve: Resolve = system_resolve,
        tracing: Tracing = NO_TRACING,
        gate: FairGate | None = None,
    ) -> None:
        self.config = config
        self._metrics = metrics
        self._tracing = tracing
        self._clock = clock
        self._timeout = config.connection_timeout
        self._hygiene = hygiene_timeout(config)
        self._on_refused = on_refused
        self.engine: AsyncEngine = build_engine(
            config, settings, on_refused=self._refused, resolve=resolve
        )
        self._gate = gate or FairGate(config.max_connections, settings.max_waiting_per_pool)
        self._in_flight = 0  # requests of THIS pool at the (maybe shared) gate or holding
        self._canceller = Canceller(config, self._spare, self._gate, timeout=self._hygiene)
        self._breaker = CircuitBreaker(
            config.pool_name, clock=clock,
            probe_max_interval=settings.probe_max_interval_seconds,
            auth_retry_interval=settings.auth_retry_interval_seconds,
        )
        self._prober = Prober(self._breaker, self._probe, name=config.pool_name, clock=clock)
        self._accounting = PoolAccounting(
            self.engine, clock, config.pool_name, on_create=self._observe_create
        )
        self._lender = Lender(
            SessionReset(config), self._accounting, recycle=settings.pool_recycle_seconds,
            name=config.pool_name, capacity=config.max_connections,
        )
        self._holders: set[AsyncConnection] = set()
        self._releases: set[asyncio.Task[None]] = set()
        self._closing = False
        self._closed = False
        self._healthy: bool | None = None  # None: never connected yet (not known healthy)
        self._last_health_check_at: datetime | None = None
        self.created_at = datetime.now(UTC)
        self._last_used = (clock(), self.created_at)
        self._acquisitions = 0
        self._acquire_seconds = 0.0
        self._acquire_timeouts = 0
        self._query_errors = 0
        self._connect_errors = 0
        self.recreations = recreations
        self._idle = IdleKeeper(
            self._queue_pool, self._gate, self._accounting, name=config.pool_name,
            close_timeout=self._hygiene, connect_timeout=self._timeout, clock=clock,
        )

    @property
    def _queue_pool(self) -> TrimmableQueuePool:
        pool = self.engine.pool
        assert isinstance(pool, TrimmableQueuePool)
        return pool

    @property
    def checked_out(self) -> int:
        """Open connections lent to requests now."""
        return self._accounting.checked_out

    @property
    def open(self) -> int:
        """Connections open to the database (what the database itself counts)."""
        return self._accounting.open

    @property
    def waiting(self) -> int:
        return self._gate.waiting

    @property
    def circuit_open(self) -> bool:
        """Connect attempts fail fast now (a cluster routes around this node)."""
        return self._breaker.is_open

    # -- acquire / release -----------------------------------------------------------

    def touch(self) -> None:
        """Stamp ``last_used_at`` (the manager calls this when it hands the pool out)."""
        self._last_used = (self._clock(), datetime.now(UTC))

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """Lend one connection: fail fast while the circuit is open, wait fairly for at most
        ``connection_timeout``, return it (reset) even when the caller was cancelled; a
        cancel that lands during the reset itself discards the connection instead."""
        conn = await self._lend()
        lent = self._clock()
        try:
            yield conn
        finally:
            await self._give_back(conn, lent, alive=False)

    async def run(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``work`` on one lent connection. When it raises ``SentNothing`` (the connection
        was dead before anything was sent), it runs once more on a fresh connection in the
        same slot; any other failure, or a second dead one, is the caller's."""
        conn = await self._lend()
        lent = self._clock()
        alive = False
        try:
            try:
                result = await work(conn)
                alive = True
                return result
            except SentNothing:
                log.info("connection found dead before sending; retrying on a fresh one",
                         extra={"pool": self.config.pool_name})
            self._holders.discard(conn)
            await self._lender.discard(conn)  # already invalidated: nothing goes back
            conn = await self._take()
            self._holders.add(conn)
            result = await work(conn)
            alive = True
            return result
        finally:
            await self._give_back(conn, lent, alive=alive)

    async def _lend(self) -> AsyncConnection:
        if self._closing:
            raise DbUnavailable("The pool is being closed; retry", retry_after=0.1)
        self._breaker.check()
        started = self._clock()
        self._in_flight += 1
        try:
            with self._tracing.pool_span("pool wait", self.config):
                await self._admit()
        except BaseException:
            self._in_flight -= 1
            raise
        try:
            conn = await self._take()
        except BaseException:
            self._in_flight -= 1
            self._gate.release()
            raise
        self._acquired(started)
        self._holders.add(conn)
        return conn

    async def _take(self) -> AsyncConnection:
        """A connection for a request holding a gate slot: an idle one the lender vouches
        for, else one checked out of the engine's pool at once (a slot is free there)."""
        async def lent_or_new() -> AsyncConnection:
            conn = await self._lender.take()
            if conn is None:
                # No await between the empty idle stack and the checkout's slot.
                conn = self._lender.adopt(await self.engine.connect())
            return conn

        return await self._bounded_connect(lent_or_new)

    async def _give_back(self, conn: AsyncConnection, lent: float, *, alive: bool) -> None:
        await self._release(conn, alive)
        self._metrics.observe_use(self.config, self._clock() - lent)

    async def _admit(self) -> None:
        try:
            await self._gate.acquire(self._timeout)
        except GateFull:
            self._acquire_timeouts += 1
            raise PoolExhausted(
                f"Too many requests waiting for a connection ({self._counts()})",
                details=self._count_details(),
                retry_after=1.0,
            ) from None
        except GateTimeout:
            self._acquire_timeouts += 1
            raise PoolExhausted(
                f"no connection within {self._timeout:g} s ({self._counts()})",
                details=self._count_details(),
                retry_after=min(self._timeout, 5.0),
            ) from None
        if self._closed:
            self._gate.release()
            raise DbUnavailable("The pool is closed; retry", retry_after=0.1)

    async def _connect(self) -> AsyncConnection:
        """A checkout of the engine's pool (a new connection when none is idle there)."""
        return await self._bounded_connect(self.engine.connect)

    async def _bounded_connect(
        self, connect: Callable[[], Awaitable[AsyncConnection]]
    ) -> AsyncConnection:
        """``connect()`` within ``connection_timeout``; failures are translated and told
        the breaker."""
        try:
            async with asyncio.timeout(self._timeout):
                with self._tracing.pool_span("connect", self.config):
                    conn = await connect()
        except HostNotAllowed:
            raise  # not the database's fault: the pool is being dropped (``_refused``)
        except Exception as exc:
            raise self._connect_failure(exc) from exc
        self._connected()
        return conn

    def _connect_failure(self, exc: Exception) -> DatabaseError:
        error = self._connect_error(exc)
        self._connect_failed(error)
        return error

    def _connected(self) -> None:
        self._breaker.record_success()
        self._healthy = True

    def _connect_failed(self, error: DatabaseError, *, trip: bool = False) -> None:
        """Count a failed connect; the breaker opens after a few (at once with ``trip``)."""
        if isinstance(error, PoolExhausted):
            self._acquire_timeouts += 1
            return
        self._connect_errors += 1
        self._healthy = False
        self._last_health_check_at = datetime.now(UTC)  # a failed connect is a real check
        if self._breaker.record_failure(error, trip=trip) and not self._closing:
            self._prober.start()

    async def _probe(self) -> None:
        """One connect for the prober, in a free slot (none free: it tries later). Its
        outcome is recorded by ``_connect``; the connection goes back to the pool, warm."""
        if self._closing or not self._gate.try_acquire():
            return
        try:
            # Through the lender first: idle ones it cannot vouch for (dead, most likely)
            # go back to the engine's pool, so the checkout below finds a slot there.
            conn = await self._lender.take()
            if conn is None:
                conn = self._lender.adopt(await self._connect())
            else:
                self._connected()
            await self._lender.give_back(conn, alive=True, keep=not self._closing)
        except DatabaseError:
            pass  # recorded on the breaker: it has scheduled the next probe
        except HostNotAllowed:
            pass  # the pool is being dropped (``_refused``)
        finally:
            self._gate.release()
            self._last_health_check_at = datetime.now(UTC)

    def _refused(self, error: HostNotAllowed) -> None:
        log.warning("the allowlist refused a new connection; the pool is dropped",
                    extra={"pool": self.config.pool_name})
        if self._on_refused is not None:
            self._on_refused(self)

    def _connect_error(self, exc: Exception) -> DatabaseError:
        error = translate_error(
            exc, self.config.db_type, secrets=[self.config.password.get_secret_value()]
        )
        if isinstance(error, DbUnavailable | DbAuthFailed | PoolExhausted):
            return error
        # Anything else at connect time (unknown database, bad TLS set-up ...) still means
        # "cannot connect"; keep the database's words.
        return DbUnavailable(
            f"Cannot connect to the database: {error.message}",
            details=error.details,
            retry_after=1.0,
        )

    def _acquired(self, started: float) -> None:
        waited = max(0.0, self._clock() - started)
        self._acquisitions += 1
        self._acquire_seconds += waited
        self.touch()
        self._metrics.observe_wait(self.config, waited)

    def _observe_create(self, seconds: float) -> None:
        self._metrics.observe_create(self.config, seconds)

    async def _release(self, conn: AsyncConnection, alive: bool) -> None:
        # Always in a task the caller's cancel cannot interrupt: a client that hangs up just
        # as its statement ends cancels us mid-reset, and the connection would have to be
        # thrown away. The reset completes and the connection goes back to the lender before
        # its slot is freed.
        task = asyncio.create_task(self._return(conn, alive))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        await asyncio.shield(task)

    async def _return(self, conn: AsyncConnection, alive: bool) -> None:
        if self._canceller.take_over(conn, self._gate.release):
            # Its statement is still being stopped on the server: the stop closes it (through
            # SQLAlchemy) and frees the slot once the session is gone.
            self._lender.forget(conn)
            self._holders.discard(conn)
            self._in_flight -= 1
            return
        try:
            # Replaced or shutting down: its slot goes to the successor, and nothing runs on
            # it (closed, no kill needed).
            with self._tracing.pool_span("reset", self.config):
                await self._lender.give_back(conn, alive=alive, keep=not self._closing)
        except Exception:
            log.warning("returning a connection failed", exc_info=True,
                        extra={"pool": self.config.pool_name})
        finally:
            self._holders.discard(conn)
            self._in_flight -= 1
            self._gate.release()

    async def discard(self, conn: AsyncConnection) -> None:
        """Never reuse ``conn``: it is closed and what it runs is stopped on the server
        (MySQL/MariaDB); its slot stays held until its session is gone (``cancel.Canceller``).
        """
        await self._canceller.discard(conn)

    def record_query_error(self, code: str) -> None:
        """Count a failed statement (the query path reports it; never a connect failure)."""
        self._query_errors += 1
        self._metrics.count_query_error(self.config, code)

    def record_query(self, seconds: float) -> None:
        """Observe how long one query or transaction took (the query path reports it)."""
        self._metrics.observe_query(self.config, seconds)

    def mark_degraded(self, last_check_at: datetime | None) -> None:
        """Start as ``degraded``: this pool replaces one whose health check failed."""
        self._healthy = False
        self._last_health_check_at = last_check_at

    # -- housekeeping ----------------------------------------------------------------

    async def health_check(self, within: float | None = None) -> bool:
        """A real round trip on a pooled connection (liveness only; not counted as use),
        opening a connection when none is idle, all within ``within`` seconds. A connect that fails
        or times out opens the circuit at once, so the prober follows the database back;
        while it is open the probes are the check."""
        if self._closing or self._breaker.is_open:
            return self._healthy is True
        if not self._gate.try_acquire():
            return self._healthy is True  # every slot is serving requests: they are the check
        bound = self._hygiene if within is None else min(self._hygiene, within)
        try:
            healthy = await self._round_trip(asyncio.get_running_loop().time() + bound)
        finally:
            self._gate.release()
        self._healthy = healthy
        self._last_health_check_at = datetime.now(UTC)
        return healthy

    async def _round_trip(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(deadline):
                conn = await self._borrowed()
        except Exception as exc:
            self._connect_failed(self._connect_error(exc), trip=True)
            return False
        healthy = False
        try:
            async with asyncio.timeout_at(deadline):
                driver = self._lender.driver(conn)
                await adapter_of(driver).ping(driver)
            healthy = True
        except Exception as exc:
            log.warning("health check failed", extra={"pool": self.config.pool_name,
                                                      "error": type(exc).__name__})
            return False
        finally:
            await self._lender.give_back(conn, alive=healthy, keep=healthy and not self._closing)
        self._breaker.record_success()
        return True

    async def _borrowed(self) -> AsyncConnection:
        """A connection for the pool's own use (the caller holds a gate slot): an idle one,
        else a checkout; failures raised as they come (the caller's to judge)."""
        conn = await self._lender.take()
        if conn is None:
            conn = self._lender.adopt(await self.engine.connect())
        return conn

    @asynccontextmanager
    async def _spare(self) -> AsyncIterator[Any]:
        """A driver connection of this pool for a kill (``cancel``; the caller holds a gate
        slot). One that failed in use is discarded, not kept."""
        conn = await self._borrowed()
        ok = False
        try:
            yield self._lender.driver(conn)
            ok = True
        finally:
            await self._lender.give_back(conn, alive=ok, keep=ok and not self._closing)

    async def inspect(self, sql: str) -> list[Any] | None:
        """Rows of one monitoring statement (a cluster's role and lag probe) on a pooled
        connection, not counted as use; ``None`` when every slot is serving requests.
        Failures are the caller's (the statement is the monitor's own, never a caller's)."""
        if self._closing or not self._gate.try_acquire():
            return None
        conn: AsyncConnection | None = None
        try:
            async with asyncio.timeout(self._hygiene):
                conn = await self._borrowed()
                result = await conn.exec_driver_sql(sql)
                rows = list(result.mappings().all()) if result.returns_rows else []
            self._breaker.record_success()
            return rows
        finally:
            if conn is not None:  # rolled back (SQLAlchemy began a transaction), then idle
                await self._lender.give_back(conn, alive=False, keep=not self._closing)
            self._gate.release()

    async def trim_idle(self, idle_timeout: float) -> int:
        """Close connections idle longer than ``idle_timeout`` above ``min_connections``, and
        any idle one the server already dropped; returns how many were closed."""
        if self._closing:
            return 0
        # The lender's idle ones that qualify go back to the engine's pool, whose trimming
        # then closes them with its own (dead first, then surplus past the timeout).
        cutoff = self._clock() - idle_timeout
        await self._lender.release(lambda lent: driver_closed(lent.driver)
                                   or float(lent.info.get(IDLE_SINCE, 0.0)) <= cutoff)
        return await self._idle.trim(idle_timeout, self.config.min_connections)

    async def fill_min(self) -> int:
        """Open connections until ``min_connections`` are open, using free slots only."""
        return await self._idle.fill(self.config.min_connections, lambda: self._closing)

    def is_idle(self, ttl: float) -> bool:
        """Unused for ``ttl`` seconds and nothing lent or waiting."""
        busy = self._gate.in_use or self._gate.waiting or self.checked_out
        return not busy and self._clock() - self._last_used[0] >= ttl

    async def aclose(self, grace: float) -> None:
        """Stop admitting, wait up to ``grace`` for in-flight work, then dispose (forcing)."""
        if self._closing:
            return
        self._closing = True
        await self._prober.aclose()
        started = self._clock()
        await self._lender.close()  # idle ones back to the engine's pool, closed just below
        await self._idle.close_all()
        while self._in_flight or self._releases or self._canceller.busy:
            if self._clock() - started >= grace:
                break
            await asyncio.sleep(_DRAIN_POLL)
        self._closed = True
        if self._holders:
            log.warning("closing pool with connections still in use",
                        extra={"pool": self.config.pool_name, "in_use": len(self._holders)})
            for conn in list(self._holders):
                await self.discard(conn)
        await self._canceller.aclose(grace - (self._clock() - started))
        try:
            async with asyncio.timeout(max(self._hygiene, 1.0)):
                await self.engine.dispose()
        except Exception:
            log.warning("disposing the engine failed", exc_info=True,
                        extra={"pool": self.config.pool_name})
        log.info("pool closed", extra={"pool": self.config.pool_name,
                                       "seconds": round(self._clock() - started, 3)})

    # -- reporting -------------------------------------------------------------------

    def _counts(self) -> str:
        out = self.checked_out
        counts = f"open={self.open}, active={out}, idle={self.open - out}, waiting={self.waiting}"
        if self._canceller.busy:  # slots held until the server has dropped their statements
            counts += f", stopping={self._canceller.busy}"
        return counts

    def _count_details(self) -> dict[str, int]:
        out = self.checked_out
        return {"open": self.open, "active": out, "idle": self.open - out,
                "waiting": self.waiting, "stopping": self._canceller.busy,
                "max": self.config.max_connections}

    def _state(self) -> PoolState:
        if self._breaker.auth_failed:
            return "auth_failed"
        if self._breaker.is_open:
            return "circuit_open"
        return "ok" if self._healthy else "degraded"  # never connected yet: not known good

    def stats(self) -> PoolStats:
        avg = self._acquire_seconds / self._acquisitions * 1000 if self._acquisitions else 0.0
        return PoolStats(
            acquisitions=self._acquisitions,
            acquire_timeouts=self._acquire_timeouts,
            query_errors=self._query_errors,
            connect_errors=self._connect_errors,
            recreations=self.recreations,
            avg_acquire_ms=round(avg, 3),
        )

    def snapshot(self) -> PoolSnapshot:
        """The pool at this instant (status API, metrics, logs)."""
        (opened, out), now = self._accounting.counts(), self._clock()
        idle_seconds = max(0.0, now - self._last_used[0])
        state, due = self._state(), self._breaker.next_probe_at
        return PoolSnapshot(
            connection_id=self.config.id,
            connection_name=self.config.name,
            db_type=self.config.db_type.value,
            pool_name=self.config.pool_name,
            checked_out=out,
            checked_in=opened - out,
            max_connections=self.config.max_connections,
            min_connections=self.config.min_connections,
            waiting=self.waiting,
            state=state,
            healthy=state == "ok",
            last_health_check_at=self._last_health_check_at,
            created_at=self.created_at,
            last_used_at=self._last_used[1],
            idle_seconds=round(idle_seconds, 3),
            stats=self.stats(),
            next_probe_at=None if due is None else _wall_clock(due - now),
            last_probe_error=self._breaker.last_error_code,
            node=self.config.node,
        )

    def __repr__(self) -> str:
        return f"<ManagedPool {self.config.pool_name} {self._counts()} state={self._state()}>"


def _wall_clock(seconds_from_now: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=max(0.0, seconds_from_now))
