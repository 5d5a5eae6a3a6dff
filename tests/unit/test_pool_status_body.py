"""The pool-status route's hand-built JSON equals what its documented models would produce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.api.schemas.common import Envelope
from app.api.schemas.pools import (
    PoolStatusList,
    PoolStatusPublic,
    pool_status_body,
    pool_status_entry,
)
from app.pools.stats import NodeSnapshot, PoolSnapshot, PoolState, PoolStats, cluster_snapshot

NOW = datetime(2026, 1, 13, 10, 0, 0, 123456, tzinfo=UTC)


def _snap(cid: int, *, out: int = 0, state: PoolState = "ok",
          checked: datetime | None = None, avg: float = 0.0) -> PoolSnapshot:
    return PoolSnapshot(
        connection_id=cid, connection_name=f"conn-{cid}", db_type="postgresql",
        pool_name=f"pool-{cid}", checked_out=out, checked_in=2, max_connections=10,
        min_connections=1, waiting=3, state=state, healthy=state == "ok",
        last_health_check_at=checked, created_at=NOW - timedelta(hours=1),
        last_used_at=NOW.astimezone(timezone(timedelta(hours=5))), idle_seconds=7.9,
        stats=PoolStats(acquisitions=5, acquire_timeouts=1, query_errors=2, recreations=1,
                        avg_acquire_ms=avg),
    )


def _cluster(cid: int) -> PoolSnapshot:
    nodes = [
        NodeSnapshot(node="node0", role="primary", address="db1:5432", weight=1,
                     lag_seconds=0.0, probed_at=NOW, pool=_snap(cid, out=1, checked=NOW)),
        NodeSnapshot(node="node1", role="replica", address="[::1]:5433", weight=3,
                     lag_seconds=None, probed_at=None,
                     pool=_snap(cid, state="circuit_open", avg=2.0)),
    ]
    return cluster_snapshot(nodes, created_at=NOW, recreations=0)


@pytest.mark.parametrize(
    "snap",
    [
        _cluster(4),
        _snap(1),
        _snap(2, out=4, state="degraded", checked=NOW, avg=1.23456),
        _snap(3, state="circuit_open", checked=NOW.replace(tzinfo=None), avg=0.5),
    ],
)
def test_entry_equals_the_model(snap: PoolSnapshot) -> None:
    model = PoolStatusPublic.of(snap).model_dump(mode="json", by_alias=True)
    entry = pool_status_entry(snap)
    assert entry == model
    assert list(entry) == list(model)  # same key order on the wire
    assert list(entry["stats"]) == list(model["stats"])


def test_body_equals_the_model_sorted_and_counted() -> None:
    snaps = [_snap(9, out=1), _snap(4), _snap(7, out=2)]
    body = pool_status_body(snaps)
    expected = Envelope(data=PoolStatusList.of(snaps)).model_dump(mode="json", by_alias=True)
    assert body == expected["data"]
    assert [p["connectionId"] for p in body["pools"]] == [4, 7, 9]
    assert body["activePools"] == 2


def test_empty_body() -> None:
    assert pool_status_body([]) == {"totalPools": 0, "activePools": 0, "pools": []}
