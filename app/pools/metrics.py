"""Prometheus metrics for the pools of THIS process (OpenTelemetry db-client pool names).

Two sources, written together in the Prometheus text format (0.0.4) by :class:`PoolMetrics`:

* the live pools' snapshots, read at scrape time: open connections by state, limits,
  waiters, acquire timeouts, circuit state and the pool count. A pool's series vanish with
  the pool, because they are only ever read from live snapshots;
* per-pool instruments the pools feed through hooks (``observe_wait`` ...): histograms of
  create / wait / use / query time and counters of recreations and query errors, plus
  evictions by ``db_type``. A pool's instruments go when the pool goes (``forget`` /
  ``retain``).

Labels are ``pool_name`` (``dbpool:<id>``), ``connection_id``, ``db_type`` and ``node`` (the
node of the registration: ``node0`` for its own host, ``node1``... for its replicas; each node
has its own pool, so every per-pool series is per node) -- never a host name or a user name.
Each process (uvicorn worker, replica) reports only its own pools.

Why not prometheus-client's instruments and ``generate_latest``: they format every sample
generically (label names validated and escaped per line, ~6.5 µs a line). The per-pool
histograms DESIGN asks for are ~70 lines per pool, so 500 live pools took over 200 ms idle
and near a second under load. The families here are fixed and known, so their label text is
built once per pool and a line costs ~0.3 µs (500 live pools: ~38,000 lines in ~12 ms).
prometheus-client's own parser checks the output in the tests.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from app.domain import ConnectionConfig
from app.pools.stats import PoolSnapshot

__all__ = ["CONTENT_TYPE", "TIME_BUCKETS", "PoolCounters", "PoolMetrics", "SnapshotSource"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from sub-millisecond waits on a warm pool to a full 30 s connection_timeout.
TIME_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_LE = [repr(float(b)) for b in TIME_BUCKETS] + ["+Inf"]

_HISTOGRAMS = (
    ("db_client_connection_create_time_seconds", "Time to open a new connection."),
    ("db_client_connection_wait_time_seconds", "Time a request waited for a connection."),
    ("db_client_connection_use_time_seconds", "Time a connection stayed checked out."),
    ("dbpool_query_duration_seconds", "Time to run one query or transaction."),
)
_CREATE, _WAIT, _USE, _QUERY = range(4)


@dataclass(frozen=True, slots=True)
class PoolCounters:
    """One pool's running totals: queries run, queries failed, acquire waits per bucket
    (``TIME_BUCKETS`` then +Inf, not cumulative). The history derives rates from them."""

    queries: int = 0
    errors: int = 0
    wait_counts: tuple[int, ...] = (0,) * len(_LE)


class SnapshotSource(Protocol):
    """Anything that lists the live pools' snapshots (the ``PoolManager``)."""

    def snapshots(self) -> Sequence[PoolSnapshot]: ...


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _label_text(pool_name: str, connection_id: int, db_type: str, node: str) -> str:
    return (
        f'pool_name="{_escape(pool_name)}",connection_id="{connection_id}",'
        f'db_type="{_escape(db_type)}",node="{_escape(node)}"'
    )


class _Histogram:
    """One pool's observations of one timing: per-bucket counts (not cumulative) and a sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * len(_LE)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (le = "less or equal").
        self.counts[bisect_left(TIME_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(slots=True)
class _PoolSeries:
    """Every per-pool instrument of one connection, with its label text built once."""

    db_type: str
    labels: str
    histograms: tuple[_Histogram, ...] = field(
        default_factory=lambda: tuple(_Histogram() for _ in _HISTOGRAMS)
    )
    recreations: int = 0
    errors: dict[str, int] = field(default_factory=dict)


class PoolMetrics:
    """The process's pool instruments and the hooks pools call; ``render()`` writes the text.

    Wire-up: ``metrics = PoolMetrics()``; give it to the pools; ``metrics.watch(manager)``.
    Hooks and ``render()`` run on the event loop.
    """

    def __init__(self) -> None:
        self._source: SnapshotSource | None = None
        self._series: dict[tuple[int, str], _PoolSeries] = {}
        self._evictions: dict[str, int] = {}

    def watch(self, source: SnapshotSource) -> None:
        """Read the live pools from ``source`` (the pool manager) at each scrape."""
        self._source = source

    def render(self) -> bytes:
        """Every family, Prometheus text format, written on the caller's thread (the loop's:
        the pools' state is the loop's). About 0.3 µs a line: 500 live pools, ~38,000 lines,
        take ~12 ms, and nothing is copied first, so a scrape adds no garbage for the
        cyclic collector (whose full passes stall a process with hundreds of pools)."""
        snaps = self._source.snapshots() if self._source is not None else []
        out: list[str] = []
        _write_snapshots(out, snaps)
        _write_series(out, self._series.values())
        _header(out, "dbpool_pool_evictions_total", "counter",
                "Pools disposed after staying idle past the TTL.")
        for db_type, count in sorted(self._evictions.items()):
            out.append(f'dbpool_pool_evictions_total{{db_type="{_escape(db_type)}"}} {count}\n')
        return "".join(out).encode()

    # Hooks the pools call; each is a dict lookup and a few additions.

    def observe_create(self, config: ConnectionConfig, seconds: float) -> None:
        self._track(config).histograms[_CREATE].observe(seconds)

    def observe_wait(self, config: ConnectionConfig, seconds: float) -> None:
        self._track(config).histograms[_WAIT].observe(seconds)

    def observe_use(self, config: ConnectionConfig, seconds: float) -> None:
        self._track(config).histograms[_USE].observe(seconds)

    def observe_query(self, config: ConnectionConfig, seconds: float) -> None:
        self._track(config).histograms[_QUERY].observe(seconds)

    def count_query_error(self, config: ConnectionConfig, code: str) -> None:
        errors = self._track(config).errors
        errors[code] = errors.get(code, 0) + 1

    def count_recreation(self, config: ConnectionConfig) -> None:
        self._track(config).recreations += 1

    def count_eviction(self, config: ConnectionConfig) -> None:
        db_type = config.db_type.value
        self._evictions[db_type] = self._evictions.get(db_type, 0) + 1

    # Removal: a pool that is gone leaves no series behind.

    def forget(self, connection_id: int) -> None:
        """Remove every per-pool series of ``connection_id`` (all its nodes)."""
        for key in [key for key in self._series if key[0] == connection_id]:
            del self._series[key]

    def retain(self, live_ids: set[int]) -> None:
        """Forget every pool not in ``live_ids`` (the housekeeper's safety net each round)."""
        for cid in {cid for cid, _ in self._series if cid not in live_ids}:
            self.forget(cid)

    def counters(self, connection_id: int) -> PoolCounters:
        """The running totals of ``connection_id``, summed over its nodes (zeros when it has
        none yet)."""
        nodes = [s for (cid, _), s in self._series.items() if cid == connection_id]
        if not nodes:
            return PoolCounters()
        queries = sum(sum(s.histograms[_QUERY].counts) for s in nodes)
        errors = sum(sum(s.errors.values()) for s in nodes)
        waits = tuple(map(sum, zip(*(s.histograms[_WAIT].counts for s in nodes), strict=True)))
        return PoolCounters(queries, errors, waits)

    @property
    def tracked_ids(self) -> set[int]:
        """Connection ids that currently have per-pool series."""
        return {cid for cid, _ in self._series}

    def _track(self, config: ConnectionConfig) -> _PoolSeries:
        key = (config.id, config.node)
        series = self._series.get(key)
        db_type = config.db_type.value
        if series is None or series.db_type != db_type:  # new, or db_type changed by a PATCH
            labels = _label_text(config.pool_name, config.id, db_type, config.node)
            series = _PoolSeries(db_type, labels)
            self._series[key] = series
        return series


# ---- the text format ---------------------------------------------------------------------


def _header(out: list[str], name: str, kind: str, documentation: str) -> None:
    out.append(f"# HELP {name} {documentation}\n# TYPE {name} {kind}\n")


def _write_snapshots(out: list[str], registrations: Sequence[PoolSnapshot]) -> None:
    snaps = _node_pools(registrations)
    labels = [_label_text(s.pool_name, s.connection_id, s.db_type, s.node) for s in snaps]
    _header(out, "db_client_connection_count", "gauge",
            "Connections open now, by state (used = checked out, idle = in the pool).")
    for text, snap in zip(labels, snaps, strict=True):
        out.append(f'db_client_connection_count{{{text},state="used"}} {snap.checked_out}\n')
        out.append(f'db_client_connection_count{{{text},state="idle"}} {snap.checked_in}\n')
    gauges = (
        ("db_client_connection_max", "gauge", "Most connections the pool may open.",
         lambda s: s.max_connections),
        ("db_client_connection_idle_min", "gauge", "Idle connections kept open.",
         lambda s: s.min_connections),
        ("db_client_connection_pending_requests", "gauge",
         "Requests waiting for a connection now.", lambda s: s.waiting),
        ("db_client_connection_timeouts_total", "counter",
         "Requests that got no connection in time, since the pool was built.",
         lambda s: s.stats.acquire_timeouts),
        ("dbpool_circuit_open", "gauge",
         "1 while the pool's circuit breaker is open (database unreachable or credentials "
         "refused).", lambda s: int(s.state in ("circuit_open", "auth_failed"))),
        ("dbpool_connect_errors_total", "counter",
         "Connect attempts that failed, since the pool was built.",
         lambda s: s.stats.connect_errors),
    )
    for name, kind, documentation, value in gauges:
        _header(out, name, kind, documentation)
        out.extend(f"{name}{{{text}}} {value(snap)}\n"
                   for text, snap in zip(labels, snaps, strict=True))
    _header(out, "dbpool_pools", "gauge", "Pools alive in this process (one per registration).")
    out.append(f"dbpool_pools {len(registrations)}\n")


def _node_pools(registrations: Sequence[PoolSnapshot]) -> list[PoolSnapshot]:
    """One snapshot per node pool: a cluster's nodes, a single-node registration's one pool."""
    out: list[PoolSnapshot] = []
    for snap in registrations:
        if snap.nodes:
            out.extend(node.pool for node in snap.nodes)
        else:
            out.append(snap)
    return out


def _write_series(out: list[str], series: Collection[_PoolSeries]) -> None:
    for index, (name, documentation) in enumerate(_HISTOGRAMS):
        _header(out, name, "histogram", documentation)
        for pool in series:
            histogram, text, cumulative = pool.histograms[index], pool.labels, 0
            for le, count in zip(_LE, histogram.counts, strict=True):
                cumulative += count
                out.append(f'{name}_bucket{{{text},le="{le}"}} {cumulative}\n')
            out.append(f"{name}_sum{{{text}}} {histogram.total!r}\n"
                       f"{name}_count{{{text}}} {cumulative}\n")
    _header(out, "dbpool_pool_recreations_total", "counter",
            "Pools rebuilt after a failed health check.")
    out.extend(f"dbpool_pool_recreations_total{{{pool.labels}}} {pool.recreations}\n"
               for pool in series)
    _header(out, "dbpool_query_errors_total", "counter", "Failed queries by error code.")
    for pool in series:
        out.extend(f'dbpool_query_errors_total{{{pool.labels},code="{_escape(code)}"}} {n}\n'
                   for code, n in sorted(pool.errors.items()))
