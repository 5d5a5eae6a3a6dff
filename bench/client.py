"""Async helpers the extra measurements share: one HTTP client, timing and summaries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx

from bench.fixtures import DbTarget
from bench.load import percentile

__all__ = ["API", "RawHttp", "bounded_gather", "latency_summary", "register"]

API = "/api/external-db-connections"
T = TypeVar("T")


async def register(http: httpx.AsyncClient, name: str, db: DbTarget, **fields: Any) -> int:
    """Register ``db`` in the service (camelCase ``fields`` override) and return its id."""
    body = {
        "name": name,
        "dbType": db.engine,
        "host": db.host,
        "port": db.port,
        "database": db.database,
        "username": db.user,
        "password": db.password,
        "maxConnections": 10,
    } | fields
    response = await http.post(API, json=body)
    if response.status_code != 201:
        raise RuntimeError(f"register {name}: {response.status_code} {response.text[:300]}")
    return int(response.json()["data"]["id"])


class RawHttp:
    """One keep-alive HTTP/1.1 connection with next to no client overhead, for latency
    figures of a few milliseconds (httpx alone adds about that much here)."""

    def __init__(self, url: str) -> None:
        hostport = url.split("://", 1)[1].rstrip("/")
        self.host, _, port = hostport.rpartition(":")
        self.port = int(port)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[float, int, bytes]:
        """(seconds, status, body) of one request, bounded by a 30 s timeout."""
        assert self._reader is not None and self._writer is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        started = time.perf_counter()
        self._writer.write(head.encode() + b"\r\n" + body)
        status, payload = await asyncio.wait_for(self._response(), timeout=30)
        return time.perf_counter() - started, status, payload

    async def _response(self) -> tuple[int, bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self._reader.readexactly(length)


async def bounded_gather(
    make: Callable[[T], Awaitable[Any]], items: Iterable[T], limit: int
) -> list[Any]:
    """Run ``make(item)`` for every item, at most ``limit`` at a time, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await make(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def latency_summary(seconds: list[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max in milliseconds."""
    ordered = sorted(seconds)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 3)

    return {
        "samples": len(ordered),
        "p50_ms": ms(percentile(ordered, 50)),
        "p99_ms": ms(percentile(ordered, 99)),
        "max_ms": ms(ordered[-1] if ordered else None),
    }
