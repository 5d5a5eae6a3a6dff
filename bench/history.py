"""``python -m bench.history [--pools 500]``: the pool history with a FULL window, in process.

The service's history only fills after its window (15 minutes), longer than a benchmark run,
so this fills one ``HistorySampler`` from synthetic snapshots (a fake clock, one sample per
interval for the whole window) and measures what a full window costs: bytes per pool, one
sampling round, and building and encoding ``/pool-status/history`` for all pools and for one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json

from app.api.schemas.history import history_body
from app.pools.history import HistorySampler
from app.pools.metrics import TIME_BUCKETS, PoolCounters
from app.pools.stats import PoolSnapshot, PoolStats

__all__ = ["main", "measure"]

_NOW = datetime.now(UTC)


def _snapshot(cid: int, step: int) -> PoolSnapshot:
    return PoolSnapshot(
        connection_id=cid, connection_name=f"pool-{cid}", db_type="postgresql",
        pool_name=f"dbpool:{cid}", checked_out=step % 7, checked_in=3, max_connections=10,
        min_connections=0, waiting=step % 3, state="ok", healthy=True,
        last_health_check_at=None, created_at=_NOW, last_used_at=_NOW, idle_seconds=0.0,
        stats=PoolStats(),
    )  # fmt: skip


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1_700_000_000.0 + self.now


def _ms(fn: Callable[[], Any], repeat: int) -> dict[str, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "max_ms": round(max(times), 2)}


def measure(pools: int, interval: float = 5.0, window: float = 900.0) -> dict[str, Any]:
    clock, step = _Clock(), 0

    class Source:
        def snapshots(self) -> list[PoolSnapshot]:
            return [_snapshot(cid, step) for cid in range(1, pools + 1)]

    class Counters:
        def counters(self, connection_id: int) -> PoolCounters:
            waits = [0] * (len(TIME_BUCKETS) + 1)
            waits[step % 4] = step * 10
            return PoolCounters(step * 50, step, tuple(waits))

    history = HistorySampler(Source(), Counters(), period=interval, window=window,
                             clock=clock.monotonic, wall=clock.wall)
    for step in range(history.capacity):  # noqa: B007 (the sources read ``step``)
        history.sample_once()
        clock.now += interval

    def encode(connection_id: int | None) -> bytes:
        body = history_body(history.history(connection_id), interval=interval, window=window,
                            memory_bytes=history.nbytes)
        return to_json({"success": True, "data": body, "message": ""}, inf_nan_mode="null")

    return {
        "pools": pools,
        "samples_per_pool": history.capacity,
        "bytes_per_pool": round(history.nbytes / pools),
        "sample_round": _ms(history.sample_once, 20),
        "all_pools": _ms(lambda: encode(None), 5) | {"bytes": len(encode(None))},
        "one_pool": _ms(lambda: encode(1), 50) | {"bytes": len(encode(1))},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pools", type=int, default=500)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.pools), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
