"""The metrics collector and instruments against plain snapshots (the figures' agreement with
the real databases is checked in tests/integration/test_monitor_*.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.domain import ConnectionConfig, DbType
from app.pools.metrics import TIME_BUCKETS, PoolMetrics
from app.pools.stats import PoolSnapshot, PoolStats

NOW = datetime(2025, 1, 13, 10, 0, tzinfo=UTC)


def snapshot(cid: int, **changes: object) -> PoolSnapshot:
    snap = PoolSnapshot(
        connection_id=cid, connection_name=f"c{cid}", db_type="mariadb", pool_name=f"dbpool:{cid}",
        checked_out=2, checked_in=3, max_connections=10, min_connections=1, waiting=4,
        state="ok", healthy=True, last_health_check_at=None, created_at=NOW, last_used_at=NOW,
        idle_seconds=0.0, stats=PoolStats(acquire_timeouts=7),
    )  # fmt: skip
    return replace(snap, **changes)  # type: ignore[arg-type]


def config(cid: int, db_type: DbType = DbType.MARIADB) -> ConnectionConfig:
    return ConnectionConfig(
        id=cid, name=f"c{cid}", db_type=db_type, host="db.internal.example", port=3306,
        database="d", username="app_user", password=SecretStr("pw-never-shown"),
    )  # fmt: skip


class Source:
    def __init__(self, *snaps: PoolSnapshot) -> None:
        self.snaps = list(snaps)

    def snapshots(self) -> list[PoolSnapshot]:
        return list(self.snaps)


def samples(metrics: PoolMetrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = metrics.render().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def pool_labels(cid: int, **extra: str) -> frozenset[tuple[str, str]]:
    labels = {"pool_name": f"dbpool:{cid}", "connection_id": str(cid), "db_type": "mariadb",
              "node": "node0"}
    return frozenset({**labels, **extra}.items())


def test_scrape_reads_each_live_pool() -> None:
    source = Source(snapshot(1), snapshot(2, state="circuit_open", checked_out=0))
    metrics = PoolMetrics()
    metrics.watch(source)
    got = samples(metrics)

    assert got[("db_client_connection_count", pool_labels(1, state="used"))] == 2
    assert got[("db_client_connection_count", pool_labels(1, state="idle"))] == 3
    assert got[("db_client_connection_count", pool_labels(2, state="used"))] == 0
    assert got[("db_client_connection_max", pool_labels(1))] == 10
    assert got[("db_client_connection_idle_min", pool_labels(1))] == 1
    assert got[("db_client_connection_pending_requests", pool_labels(1))] == 4
    assert got[("db_client_connection_timeouts_total", pool_labels(1))] == 7
    assert got[("dbpool_circuit_open", pool_labels(1))] == 0
    assert got[("dbpool_circuit_open", pool_labels(2))] == 1
    assert got[("dbpool_pools", frozenset())] == 2


def test_a_gone_pool_leaves_no_scrape_time_series() -> None:
    source = Source(snapshot(1), snapshot(2))
    metrics = PoolMetrics()
    metrics.watch(source)
    source.snaps = [snapshot(2)]
    got = samples(metrics)
    assert not [key for key in got if ("connection_id", "1") in key[1]]
    assert got[("dbpool_pools", frozenset())] == 1


def test_hooks_feed_per_pool_instruments() -> None:
    metrics = PoolMetrics()
    cfg = config(5)
    metrics.observe_wait(cfg, 0.002)
    metrics.observe_wait(cfg, 0.2)
    metrics.observe_create(cfg, 0.01)
    metrics.observe_use(cfg, 0.05)
    metrics.observe_query(cfg, 0.04)
    metrics.count_query_error(cfg, "QUERY_ERROR")
    metrics.count_query_error(cfg, "QUERY_TIMEOUT")
    metrics.count_recreation(cfg)
    metrics.count_eviction(cfg)
    got = samples(metrics)

    assert got[("db_client_connection_wait_time_seconds_count", pool_labels(5))] == 2
    assert got[("db_client_connection_wait_time_seconds_sum", pool_labels(5))] == 0.202
    assert got[("db_client_connection_wait_time_seconds_bucket", pool_labels(5, le="0.005"))] == 1
    assert got[("db_client_connection_create_time_seconds_count", pool_labels(5))] == 1
    assert got[("db_client_connection_use_time_seconds_count", pool_labels(5))] == 1
    assert got[("dbpool_query_duration_seconds_count", pool_labels(5))] == 1
    assert got[("dbpool_query_errors_total", pool_labels(5, code="QUERY_ERROR"))] == 1
    assert got[("dbpool_query_errors_total", pool_labels(5, code="QUERY_TIMEOUT"))] == 1
    assert got[("dbpool_pool_recreations_total", pool_labels(5))] == 1
    assert got[("dbpool_pool_evictions_total", frozenset({("db_type", "mariadb")}))] == 1
    assert metrics.tracked_ids == {5}


def test_forget_and_retain_remove_a_pools_series() -> None:
    metrics = PoolMetrics()
    for cid in (1, 2, 3):
        metrics.observe_wait(config(cid), 0.1)
        metrics.count_query_error(config(cid), "QUERY_ERROR")
        metrics.count_recreation(config(cid))
    metrics.count_eviction(config(1))

    metrics.forget(1)
    metrics.retain({3})
    got = samples(metrics)

    ids = {dict(labels).get("connection_id") for _, labels in got}
    assert ids == {None, "3"}  # None: the unlabelled / db_type-only series
    assert metrics.tracked_ids == {3}
    assert got[("dbpool_pool_evictions_total", frozenset({("db_type", "mariadb")}))] == 1
    metrics.forget(99)  # unknown: no-op


def test_a_changed_db_type_drops_the_old_series() -> None:
    metrics = PoolMetrics()
    metrics.observe_wait(config(4, DbType.MARIADB), 0.1)
    metrics.observe_wait(config(4, DbType.POSTGRESQL), 0.1)
    labelled = [dict(labels) for _, labels in samples(metrics)]
    types = {labels["db_type"] for labels in labelled if labels.get("connection_id") == "4"}
    assert types == {"postgresql"}


def test_each_instance_is_its_own_and_no_hosts_or_users_leak() -> None:
    first, second = PoolMetrics(), PoolMetrics()  # two apps in one process do not clash
    first.watch(Source(snapshot(1)))
    second.watch(Source(snapshot(2)))
    first.observe_wait(config(1), 0.1)
    assert ("db_client_connection_wait_time_seconds_count", pool_labels(1)) in samples(first)
    assert not [key for key in samples(second) if ("connection_id", "1") in key[1]]
    text = first.render().decode()
    assert "db.internal.example" not in text
    assert "app_user" not in text
    assert "pw-never-shown" not in text


def test_output_parses_and_every_family_is_named_as_designed() -> None:
    metrics = PoolMetrics()
    metrics.watch(Source(snapshot(1)))
    metrics.observe_wait(config(1), 0.1)
    names = {f.name for f in text_string_to_metric_families(metrics.render().decode())}
    assert {
        "db_client_connection_count", "db_client_connection_max", "db_client_connection_idle_min",
        "db_client_connection_pending_requests", "db_client_connection_timeouts",
        "db_client_connection_create_time_seconds", "db_client_connection_wait_time_seconds",
        "db_client_connection_use_time_seconds", "dbpool_pools", "dbpool_pool_evictions",
        "dbpool_pool_recreations", "dbpool_circuit_open", "dbpool_query_duration_seconds",
        "dbpool_query_errors",
    } <= names  # fmt: skip


def test_histogram_buckets_are_cumulative_and_a_bound_is_inclusive() -> None:
    metrics = PoolMetrics()
    for seconds in (0.0005, 0.001, 0.003, 0.2, 99.0):
        metrics.observe_use(config(7), seconds)
    got = samples(metrics)

    def bucket(le: str) -> float:
        return got[("db_client_connection_use_time_seconds_bucket", pool_labels(7, le=le))]

    assert bucket("0.001") == 2  # 0.0005 and exactly 0.001
    assert bucket("0.005") == 3
    assert bucket("0.25") == 4
    assert bucket("60.0") == 4
    assert bucket("+Inf") == 5
    assert got[("db_client_connection_use_time_seconds_count", pool_labels(7))] == 5
    assert got[("db_client_connection_use_time_seconds_sum", pool_labels(7))] == 99.2045


def test_many_pools_parse_into_one_family_each() -> None:
    # Families must not be interleaved: every pool's lines sit under one HELP/TYPE.
    metrics = PoolMetrics()
    metrics.watch(Source(*(snapshot(cid) for cid in range(1, 51))))
    for cid in range(1, 51):
        metrics.observe_wait(config(cid), 0.01)
        metrics.count_query_error(config(cid), "QUERY_ERROR")
    families = list(text_string_to_metric_families(metrics.render().decode()))
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    waits = next(f for f in families if f.name == "db_client_connection_wait_time_seconds")
    assert len(waits.samples) == 50 * (len(TIME_BUCKETS) + 3)
