"""Prometheus metrics for the pools of THIS process (OpenTelemetry db-client pool names).

Two parts, both in one ``CollectorRegistry`` owned by :class:`PoolMetrics` (never the global
default registry, so two apps in one process do not clash):

* :class:`PoolCollector` reads ``manager.snapshots()`` at scrape time: gauges of open, used and
  idle connections, limits, waiters, acquire timeouts, pool count and circuit state. A pool's
  series vanish with the pool, because they are only ever read from live snapshots.
* process-level instruments the pools feed through hooks (``observe_wait`` ...): histograms of
  create/wait/use/query time and counters of recreations, evictions and query errors. The
  per-pool children are removed when the pool goes (``forget`` / ``retain``).

Labels are ``pool_name`` (``dbpool:<id>``), ``connection_id`` and ``db_type`` -- never a host
name or a user name. Each process (uvicorn worker, replica) reports only its own pools.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.domain import ConnectionConfig
from app.pools.stats import PoolSnapshot

__all__ = ["PoolCollector", "PoolMetrics", "SnapshotSource", "render"]

POOL_LABELS = ("pool_name", "connection_id", "db_type")
# Seconds: from sub-millisecond waits on a warm pool to a full 30 s connection_timeout.
TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class SnapshotSource(Protocol):
    """Anything that lists the live pools' snapshots (the ``PoolManager``)."""

    def snapshots(self) -> Sequence[PoolSnapshot]: ...


def _labels(snap: PoolSnapshot) -> list[str]:
    return [snap.pool_name, str(snap.connection_id), snap.db_type]


def _config_labels(config: ConnectionConfig) -> tuple[str, str, str]:
    return (config.pool_name, str(config.id), config.db_type.value)


class PoolCollector(Collector):
    """Scrape-time gauges read from the live pools' snapshots; it never changes anything."""

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._frozen: Sequence[PoolSnapshot] | None = None

    def freeze(self) -> None:
        """Read the pools now; collect from this copy (from another thread) until ``thaw``."""
        self._frozen = self._source.snapshots()

    def thaw(self) -> None:
        self._frozen = None

    def describe(self) -> Iterable[Metric]:
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        snaps = self._frozen if self._frozen is not None else self._source.snapshots()
        return self._families(snaps)

    def _families(self, snaps: Sequence[PoolSnapshot]) -> list[Metric]:
        count = GaugeMetricFamily(
            "db_client_connection_count",
            "Connections open now, by state (used = checked out, idle = in the pool).",
            labels=[*POOL_LABELS, "state"],
        )
        limit = _pool_gauge("db_client_connection_max", "Most connections the pool may open.")
        idle_min = _pool_gauge("db_client_connection_idle_min", "Idle connections kept open.")
        pending = _pool_gauge(
            "db_client_connection_pending_requests", "Requests waiting for a connection now."
        )
        timeouts = CounterMetricFamily(
            "db_client_connection_timeouts",
            "Requests that got no connection in time, since the pool was built.",
            labels=list(POOL_LABELS),
        )
        circuit = _pool_gauge("dbpool_circuit_open", "1 while the pool's circuit breaker is open.")
        for snap in snaps:
            labels = _labels(snap)
            count.add_metric([*labels, "used"], snap.checked_out)
            count.add_metric([*labels, "idle"], snap.checked_in)
            limit.add_metric(labels, snap.max_connections)
            idle_min.add_metric(labels, snap.min_connections)
            pending.add_metric(labels, snap.waiting)
            timeouts.add_metric(labels, snap.stats.acquire_timeouts)
            circuit.add_metric(labels, 1 if snap.state == "circuit_open" else 0)
        pools = GaugeMetricFamily("dbpool_pools", "Pools alive in this process.", value=len(snaps))
        return [count, limit, idle_min, pending, timeouts, circuit, pools]


def _pool_gauge(name: str, documentation: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=list(POOL_LABELS))


class PoolMetrics:
    """The process's pool instruments in their own registry, plus the hooks pools call.

    Wire-up: ``metrics = PoolMetrics()``; give it to the pools; ``metrics.watch(manager)``.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The `_created` sample of every histogram child adds a line per pool and tells
        # nothing a scraper needs (process-wide switch; prometheus_client has no other).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry if registry is not None else CollectorRegistry()
        self._collector: PoolCollector | None = None
        self._render_lock = asyncio.Lock()
        self._lock = threading.Lock()
        self._known: dict[int, tuple[str, str, str]] = {}  # connection id -> its label values
        self._error_codes: dict[int, set[str]] = {}
        self._per_pool: list[Histogram | Counter] = []
        self.create_time = self._histogram(
            "db_client_connection_create_time_seconds", "Time to open a new connection."
        )
        self.wait_time = self._histogram(
            "db_client_connection_wait_time_seconds", "Time a request waited for a connection."
        )
        self.use_time = self._histogram(
            "db_client_connection_use_time_seconds", "Time a connection stayed checked out."
        )
        self.query_duration = self._histogram(
            "dbpool_query_duration_seconds", "Time to run one query or transaction."
        )
        self.recreations = Counter(
            "dbpool_pool_recreations",
            "Pools rebuilt after a failed health check.",
            POOL_LABELS,
            registry=self.registry,
        )
        self._per_pool.append(self.recreations)
        self.evictions = Counter(
            "dbpool_pool_evictions",
            "Pools disposed after staying idle past the TTL.",
            ["db_type"],  # not per pool: an evicted pool's own series are gone
            registry=self.registry,
        )
        self.query_errors = Counter(
            "dbpool_query_errors",
            "Failed queries by error code.",
            [*POOL_LABELS, "code"],
            registry=self.registry,
        )

    def _histogram(self, name: str, documentation: str) -> Histogram:
        histogram = Histogram(
            name, documentation, POOL_LABELS, buckets=TIME_BUCKETS, registry=self.registry
        )
        self._per_pool.append(histogram)
        return histogram

    def watch(self, source: SnapshotSource) -> PoolCollector:
        """Register the scrape-time collector over ``source`` (the pool manager)."""
        collector = PoolCollector(source)
        self.registry.register(collector)
        self._collector = collector
        return collector

    def render(self) -> bytes:
        """Everything in this registry, Prometheus text format."""
        return render(self.registry)

    async def render_off_loop(self) -> bytes:
        """``render()`` in a worker thread: with hundreds of pools the text takes long enough
        to stall every query on the event loop. The pools are read on the loop first (their
        state is the loop's), the text is written in the thread from that frozen copy."""
        async with self._render_lock:
            collector = self._collector
            if collector is not None:
                collector.freeze()
            try:
                return await asyncio.to_thread(render, self.registry)
            finally:
                if collector is not None:
                    collector.thaw()

    # Hooks the pools call; each is cheap (a dict lookup and one observation).

    def observe_create(self, config: ConnectionConfig, seconds: float) -> None:
        self.create_time.labels(*self._track(config)).observe(seconds)

    def observe_wait(self, config: ConnectionConfig, seconds: float) -> None:
        self.wait_time.labels(*self._track(config)).observe(seconds)

    def observe_use(self, config: ConnectionConfig, seconds: float) -> None:
        self.use_time.labels(*self._track(config)).observe(seconds)

    def observe_query(self, config: ConnectionConfig, seconds: float) -> None:
        self.query_duration.labels(*self._track(config)).observe(seconds)

    def count_query_error(self, config: ConnectionConfig, code: str) -> None:
        labels = self._track(config)
        with self._lock:
            self._error_codes.setdefault(config.id, set()).add(code)
        self.query_errors.labels(*labels, code).inc()

    def count_recreation(self, config: ConnectionConfig) -> None:
        self.recreations.labels(*self._track(config)).inc()

    def count_eviction(self, config: ConnectionConfig) -> None:
        self.evictions.labels(config.db_type.value).inc()

    # Removal: a pool that is gone leaves no series behind.

    def forget(self, connection_id: int) -> None:
        """Remove every per-pool series of ``connection_id``."""
        with self._lock:
            labels = self._known.pop(connection_id, None)
            codes = self._error_codes.pop(connection_id, set())
        if labels is None:
            return
        for metric in self._per_pool:
            metric.remove(*labels)
        for code in codes:
            self.query_errors.remove(*labels, code)

    def retain(self, live_ids: set[int]) -> None:
        """Forget every pool not in ``live_ids`` (the housekeeper's safety net each round)."""
        with self._lock:
            gone = [cid for cid in self._known if cid not in live_ids]
        for cid in gone:
            self.forget(cid)

    def _track(self, config: ConnectionConfig) -> tuple[str, str, str]:
        labels = _config_labels(config)
        known = self._known.get(config.id)
        if known == labels:
            return labels  # the per-request path: one dict lookup, no lock
        if known is not None:  # db_type changed by a PATCH: drop the old series
            self.forget(config.id)
        with self._lock:
            self._known[config.id] = labels
        return labels

    @property
    def tracked_ids(self) -> set[int]:
        """Connection ids that currently have per-pool series."""
        with self._lock:
            return set(self._known)


def render(registry: CollectorRegistry) -> bytes:
    """``registry`` in the Prometheus text exposition format."""
    return generate_latest(registry)
