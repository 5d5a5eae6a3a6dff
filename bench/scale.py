"""Scale figures of one fresh service process: RSS per live pool with 2 open connections,
pool-status / ``/metrics`` latency with many registered connections and live pools, and the
pool history's memory per pool (as the service itself reports it) and its latency.

Live pools point at MariaDB under a throwaway account (PostgreSQL allows 100 connections
here, MariaDB 500), one open connection each; ``max_connections`` is raised only if needed
and restored. Pool figures are checked against what the databases count.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import psutil

from bench.client import API, RawHttp, bounded_gather, latency_summary, register
from bench.dbadmin import mariadb_capacity, my_count, pg_count, throwaway_mariadb_user
from bench.fixtures import PG, DbTarget

__all__ = ["ScaleSize", "measure_scale"]

_SETTLE_S = 0.5


@dataclass(frozen=True)
class ScaleSize:
    registered: int  # connections in the registry
    live: int  # of which have a live pool
    memory_pools: dict[str, int]  # engine -> pools with 2 open connections for the RSS delta
    status_samples: int
    metrics_samples: int


async def measure_scale(url: str, pid: int, size: ScaleSize) -> dict[str, Any]:
    """Run every scale measurement against the service at ``url`` (process ``pid``)."""
    need = size.live + 2 * size.memory_pools.get("mariadb", 0) + 2
    with mariadb_capacity(need) as capacity, throwaway_mariadb_user() as my:
        async with httpx.AsyncClient(base_url=url, timeout=60.0) as http:
            memory = await _memory(http, psutil.Process(pid), my, size.memory_pools)
            live = await _live_pools(http, my, size, already=memory["live_pools"])
            status = await _latency(url, f"{API}/pool-status", size.status_samples)
            metrics = await _latency(url, "/metrics", size.metrics_samples)
            history = await _history(url, http, live["live_pools"], size.metrics_samples)
            status["reported_total_pools"] = await _total_pools(http)
            live["mariadb_user_connections"] = my_count(my.user)
        return {
            "memory": memory,
            "live_pools": live,
            "pool_status": status,
            "metrics": metrics,
            "history": history,
            "mariadb": capacity,
        }


async def _memory(
    http: httpx.AsyncClient, proc: psutil.Process, my: DbTarget, counts: dict[str, int]
) -> dict[str, Any]:
    targets = {"postgresql": PG, "mariadb": my}
    # One warm pool per engine first, so the RSS delta excludes one-time imports (dialects,
    # drivers) and the first-use caches of the routes.
    for engine, db in targets.items():
        warm = await register(http, f"bench-warm-{engine}", db)
        await _two_open(http, warm, engine=engine)
    await http.get(f"{API}/pool-status")
    await http.get("/metrics")
    ids = {
        engine: [await register(http, f"bench-mem-{engine}-{i}", targets[engine]) for i in range(n)]
        for engine, n in counts.items()
    }
    out: dict[str, Any] = {"live_pools": 2 + sum(counts.values())}
    for engine, pool_ids in ids.items():
        # Two halves: the first absorbs what grows once with the pool count (allocator arenas
        # after concurrent connects and TLS handshakes, registry and route caches); the
        # second half's growth is the marginal cost of a pool, the figure the goal is about.
        half = len(pool_ids) // 2
        first, second = pool_ids[:half], pool_ids[half:]
        before = await _rss(proc)
        await bounded_gather(partial(_two_open, http, engine=engine), first, 8)
        middle = await _rss(proc)
        await bounded_gather(partial(_two_open, http, engine=engine), second, 8)
        after = await _rss(proc)
        open_seen = await _open_by_status(http, pool_ids)
        out[engine] = {
            "pools": len(pool_ids),
            "rss_before_kib": before // 1024,
            "rss_middle_kib": middle // 1024,
            "rss_after_kib": after // 1024,
            "kib_per_pool": round((after - middle) / 1024 / max(1, len(second)), 1),
            "kib_per_pool_first_half": round((middle - before) / 1024 / max(1, len(first)), 1),
            "open_connections_by_status": open_seen,
            "open_connections_by_database": await _db_count(engine, pool_ids, my),
        }
    return out


async def _two_open(http: httpx.AsyncClient, connection_id: int, *, engine: str) -> None:
    # Two overlapping statements force the pool to hold two connections.
    sql = "SELECT pg_sleep(0.05)" if engine == "postgresql" else "SELECT SLEEP(0.05)"
    path = f"{API}/{connection_id}/query"
    responses = await asyncio.gather(*(http.post(path, json={"sql": sql}) for _ in range(2)))
    for response in responses:
        if response.status_code != 200:
            raise RuntimeError(f"query on {connection_id}: {response.status_code} {response.text}")


async def _rss(proc: psutil.Process) -> int:
    await asyncio.sleep(_SETTLE_S)
    return int(proc.memory_info().rss)


async def _open_by_status(http: httpx.AsyncClient, ids: list[int]) -> int:
    wanted = set(ids)
    pools = (await http.get(f"{API}/pool-status")).json()["data"]["pools"]
    return sum(p["openConnections"] for p in pools if p["connectionId"] in wanted)


async def _db_count(engine: str, ids: list[int], my: DbTarget) -> int | str:
    if engine == "postgresql":
        return await pg_count(ids)
    # The throwaway account also carries the warm and the live pools: report it whole.
    return f"{my_count(my.user)} (whole account {my.user})"


async def _live_pools(
    http: httpx.AsyncClient, my: DbTarget, size: ScaleSize, *, already: int
) -> dict[str, Any]:
    """Register up to ``size.registered`` and make ``size.live`` pools live (1 open each)."""
    fresh_live = max(0, size.live - already)
    idle = max(0, size.registered - already - fresh_live)
    names = [f"bench-live-{i}" for i in range(fresh_live)]
    live_ids = await bounded_gather(lambda n: register(http, n, my), names, 8)
    idle_names = [f"bench-idle-{i}" for i in range(idle)]
    await bounded_gather(lambda n: register(http, n, PG), idle_names, 8)

    async def touch(connection_id: int) -> int:
        response = await http.post(f"{API}/{connection_id}/query", json={"sql": "SELECT 1"})
        return response.status_code

    codes = await bounded_gather(touch, live_ids, 16)
    return {
        "registered": already + fresh_live + idle,
        "live_pools": already + fresh_live,
        "failed_touches": sum(1 for c in codes if c != 200),
    }


async def _latency(url: str, path: str, samples: int) -> dict[str, Any]:
    seconds: list[float] = []
    size = 0
    async with RawHttp(url) as raw:
        for _ in range(samples):
            elapsed, status, payload = await raw.request("GET", path)
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {payload[:300]!r}")
            seconds.append(elapsed)
            size = len(payload)
    return latency_summary(seconds) | {"response_bytes": size}


async def _history(
    url: str, http: httpx.AsyncClient, live: int, samples: int
) -> dict[str, Any]:
    """Bytes of history per pool (once every live pool has been sampled), and the latency of
    the whole history and of one pool's (what the dashboard asks for every 2 s)."""
    path = f"{API}/pool-status/history"
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        data = (await http.get(path, params={"seconds": 1})).json()["data"]
        if len(data["pools"]) >= live or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.5)
    pools = len(data["pools"])
    first = data["pools"][0]["connectionId"] if pools else 0
    return {
        "pools": pools,
        "interval_s": data["intervalSeconds"],
        "window_s": data["windowSeconds"],
        "memory_bytes": data["memoryBytes"],
        "bytes_per_pool": round(data["memoryBytes"] / max(1, pools)),
        "all_pools": await _latency(url, path, samples),
        "one_pool": await _latency(url, f"{path}?connectionId={first}", samples),
    }


async def _total_pools(http: httpx.AsyncClient) -> int:
    data = (await http.get(f"{API}/pool-status")).json()["data"]
    return int(data["totalPools"])
