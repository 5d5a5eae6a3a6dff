"""Fault figures: fail-fast latency while a circuit is open, and the time from the
database coming back to the first successful query (through the test-side ``TcpProxy``)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from bench.client import API, RawHttp, latency_summary, register
from bench.fixtures import PG, DbTarget
from bench.procs import free_port
from tests.support.proxy import TcpProxy

__all__ = ["measure_fail_fast", "measure_recovery"]

_OPEN_ATTEMPTS = 50
_OPEN_BUDGET_S = 30.0
_RECOVERY_BUDGET_S = 90.0
_POLL_S = 0.02


async def measure_fail_fast(url: str, samples: int) -> dict[str, Any]:
    """Latency of ``samples`` queries on a connection whose circuit is open."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        return await _fail_fast(http, samples)


async def measure_recovery(url: str) -> dict[str, Any]:
    """Seconds from the database coming back to the first successful query."""
    async with httpx.AsyncClient(base_url=url, timeout=30.0) as http:
        return await _recovery(http)


def _code(response: httpx.Response) -> str:
    if response.status_code == 200:
        return "OK"
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP_{response.status_code}"


async def _state(http: httpx.AsyncClient, connection_id: int) -> str | None:
    data = (await http.get(f"{API}/{connection_id}/pool-status")).json().get("data")
    return None if data is None else str(data.get("state"))


async def _open_circuit(http: httpx.AsyncClient, connection_id: int) -> dict[str, Any]:
    """Query until the pool reports ``circuit_open`` (bounded in count and time)."""
    started = time.monotonic()
    codes: list[str] = []
    last: httpx.Response | None = None
    for _ in range(_OPEN_ATTEMPTS):
        last = await http.post(f"{API}/{connection_id}/query", json={"sql": "SELECT 1"})
        codes.append(_code(last))
        if await _state(http, connection_id) == "circuit_open":
            break
        if time.monotonic() - started > _OPEN_BUDGET_S:
            break
    return {
        "opened": await _state(http, connection_id) == "circuit_open",
        "attempts": len(codes),
        "seconds_to_open": round(time.monotonic() - started, 3),
        "codes": sorted(set(codes)),
        "retry_after": None if last is None else last.headers.get("retry-after"),
    }


async def _fail_fast(http: httpx.AsyncClient, samples: int) -> dict[str, Any]:
    closed = DbTarget("postgresql", "127.0.0.1", free_port(), "nowhere", "nobody", "unused-pw")
    connection_id = await register(http, "bench-closed-port", closed, connectionTimeout=2.0)
    opening = await _open_circuit(http, connection_id)
    seconds: list[float] = []
    codes: dict[str, int] = {}
    body = json.dumps({"sql": "SELECT 1"}).encode()
    async with RawHttp(str(http.base_url)) as raw:
        for _ in range(samples):
            elapsed, status, payload = await raw.request(
                "POST", f"{API}/{connection_id}/query", body
            )
            seconds.append(elapsed)
            code = _code_of(status, payload)
            codes[code] = codes.get(code, 0) + 1
        reference = [(await raw.request("GET", "/healthz"))[0] for _ in range(samples)]
    return {
        "trigger": opening,
        "latency": latency_summary(seconds),
        "codes": codes,
        "healthz_reference": latency_summary(reference),
    }


def _code_of(status: int, payload: bytes) -> str:
    if status == 200:
        return "OK"
    try:
        return str(json.loads(payload)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return f"HTTP_{status}"


def _retry_after(response: httpx.Response | None) -> float | None:
    try:
        return float(response.headers["retry-after"]) if response is not None else None
    except (KeyError, ValueError):
        return None


async def _recovery(http: httpx.AsyncClient) -> dict[str, Any]:
    async with TcpProxy(PG.host, PG.port) as proxy:
        via = DbTarget("postgresql", "127.0.0.1", proxy.port, PG.database, PG.user, PG.password)
        connection_id = await register(http, "bench-proxied", via, connectionTimeout=2.0)
        first = await http.post(f"{API}/{connection_id}/query", json={"sql": "SELECT 1"})
        if first.status_code != 200:
            raise RuntimeError(f"query through the proxy failed: {first.text[:300]}")
        proxy.cut()
        opening = await _open_circuit(http, connection_id)
        await asyncio.sleep(0.3)  # held down a little while open, as in an outage
        last = await http.post(f"{API}/{connection_id}/query", json={"sql": "SELECT 1"})
        remaining_backoff = _retry_after(last)
        proxy.restore()
        restored_at = time.monotonic()
        attempts, ok = 0, False
        while time.monotonic() - restored_at < _RECOVERY_BUDGET_S:
            attempts += 1
            response = await http.post(f"{API}/{connection_id}/query", json={"sql": "SELECT 1"})
            if response.status_code == 200:
                ok = True
                break
            await asyncio.sleep(_POLL_S)
        seconds = time.monotonic() - restored_at
    return {
        "trigger": opening,
        "code_before_restore": _code(last),
        "retry_after_before_restore_s": remaining_backoff,
        "recovered": ok,
        "seconds_to_first_success": round(seconds, 3) if ok else None,
        "attempts_after_restore": attempts,
    }
