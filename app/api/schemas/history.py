"""Response body of ``/pool-status/history``: each live pool's recent samples, column-wise.

Columns rather than one object per sample: 500 pools of 180 samples are ~800,000 values, and
repeating nine keys on each would multiply the body several times over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import Field

from app.api.schemas.common import ApiModel
from app.pools.history import PoolHistory

__all__ = ["HistorySamples", "PoolHistoryList", "PoolHistoryPublic", "history_body"]


class HistorySamples(ApiModel):
    """One pool's samples, oldest first: entry ``i`` of every list is sample ``i``."""

    at: list[int] = Field(description="When the sample was taken, epoch milliseconds (UTC)")
    open: list[int]
    active: list[int] = Field(description="Checked out")
    idle: list[int]
    waiting: list[int]
    max: list[int] = Field(description="The pool's maxConnections")
    wait_p99_ms: list[float | None] = Field(
        description="Acquire-wait p99 over the interval, estimated from the histogram's "
        "buckets; null when nothing waited for a connection"
    )
    queries_per_second: list[float | None] = Field(
        description="Queries (and transactions) over the interval; null on a pool's first sample"
    )
    errors_per_second: list[float | None] = Field(description="Failed queries over the interval")


class PoolHistoryPublic(ApiModel):
    connection_id: int
    connection_name: str
    db_type: str
    samples: HistorySamples


class PoolHistoryList(ApiModel):
    """Every live pool's history in this process (a pool's history goes with the pool)."""

    interval_seconds: float = Field(description="Time between samples")
    window_seconds: float = Field(description="How far back the history reaches at most")
    memory_bytes: int = Field(description="What the history holds in memory, all pools")
    pools: list[PoolHistoryPublic]


def _entry(pool: PoolHistory) -> dict[str, Any]:
    return {"connectionId": pool.connection_id, "connectionName": pool.connection_name,
            "dbType": pool.db_type, "samples": pool.samples}


def history_body(pools: Sequence[PoolHistory], *, interval: float, window: float,
                 memory_bytes: int) -> dict[str, Any]:
    """``PoolHistoryList`` as camelCase data, without building the models. The samples are
    the ring's own columns: encode with ``to_json(..., inf_nan_mode="null")`` (a missing
    value is stored as NaN)."""
    return {"intervalSeconds": interval, "windowSeconds": window, "memoryBytes": memory_bytes,
            "pools": [_entry(p) for p in pools]}
