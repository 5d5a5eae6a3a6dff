"""The soak's chaos schedule and the code that carries it out.

``schedule(seconds, registry_faults)`` lays out, per cycle of about ``CYCLE_S`` seconds:
backends killed (only the soak role's / the soak accounts' sessions), proxy cuts and stalls
of 1-60 s and added latency, a PATCH that rebuilds a pool, a connection deactivated and
reactivated, the registry's PostgreSQL cut off (through its own proxy), and bursts of 10x a
pool's size. Shorter runs get the same schedule scaled down. ``Chaos`` runs it and records,
for every fault, when the database was reachable again and how long its pool took to report
``ok`` (polled every ``POLL_S``).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from bench.soak_load import API, Recorder
from tests.support import dbs
from tests.support.proxy import TcpProxy

__all__ = ["CYCLE_S", "Chaos", "Fault", "Target", "schedule"]

CYCLE_S = 80.0
LONG_CUT_S = 60.0
POLL_S = 0.05
WATCH_LIMIT_S = 30.0
BURST_FACTOR = 10
DELAY_S = 0.2

# (offset in a CYCLE_S cycle, kind, target, duration in seconds); all over by 72 s
_TEMPLATE: tuple[tuple[float, str, str, float], ...] = (
    (3, "kill", "pg-direct", 0),
    (6, "cut", "pg-flaky", 10),
    (8, "burst", "pg-direct", 0),
    (10, "kill", "my-direct", 0),
    (14, "cut", "my-flaky", 10),
    (20, "patch", "pg-direct", 0),
    (22, "delay", "pg-flaky", 5),
    (28, "registry_cut", "registry", 6),
    (30, "stall", "pg-flaky", 5),
    (38, "deactivate", "my-direct", 4),
    (44, "stall", "my-flaky", 4),
    (47, "burst", "my-direct", 0),
    (50, "kill", "pg-direct", 0),
    (51, "kill", "my-direct", 0),
    (54, "cut", "pg-flaky", 1),
    (60, "cut", "my-flaky", 2),
    (63, "burst", "pg-flaky", 0),
    (66, "patch", "my-direct", 0),
    (70, "stall", "pg-flaky", 2),
)
# What the long-outage proxy does in cycles after the first (the first: a 60 s cut).
_LONG_TARGET_LATER = (("cut", 10.0), ("stall", 20.0), ("cut", 30.0), ("cut", 60.0), ("cut", 3.0))
OUTAGES = frozenset({"cut", "stall"})


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the load starts
    kind: str
    target: str
    duration: float = 0.0


@dataclass
class Target:
    """One soak connection as the chaos sees it."""

    name: str
    id: int
    engine: str
    max_connections: int
    proxy: TcpProxy | None = None
    my_user: str | None = None  # MariaDB: the pool's own account


def schedule(seconds: float, registry_faults: bool) -> list[Fault]:
    """The faults of a run of ``seconds``, in time order (see the module docstring)."""
    cycles = max(1, int(seconds // CYCLE_S))
    length = seconds / cycles
    scale = min(1.0, length / CYCLE_S)
    faults: list[Fault] = []
    for cycle in range(cycles):
        start = cycle * length
        for offset, kind, target, duration in _TEMPLATE:
            if kind == "registry_cut" and not registry_faults:
                continue
            if kind == "cut" and target == "pg-flaky" and offset == 54:
                duration = 1 + 2 * (cycle % 3)  # 1, 3, 5 s
            lasting = max(1.0, duration * scale) if duration else 0.0
            faults.append(Fault(round(start + offset * scale, 2), kind, target, lasting))
        kind, lasting = (
            ("cut", LONG_CUT_S)
            if cycle == 0
            else _LONG_TARGET_LATER[(cycle - 1) % len(_LONG_TARGET_LATER)]
        )
        lasting = lasting if length >= LONG_CUT_S + 20 else round(0.65 * length, 2)
        faults.append(Fault(round(start + 5 * scale, 2), kind, "pg-cut", lasting))
    return sorted(faults, key=lambda f: f.at)


@dataclass
class Chaos:
    """Carries out a schedule against the running service; ``records`` says what happened."""

    http: httpx.AsyncClient
    targets: dict[str, Target]
    pg_role: str
    registry_proxy: TcpProxy | None
    recorder: Recorder
    records: list[dict[str, Any]] = field(default_factory=list)
    _watchers: set[asyncio.Task[None]] = field(default_factory=set)
    _patches: int = 0

    async def run(self, faults: list[Fault], started: float) -> None:
        """Start each fault at its time (wall clock ``started`` + ``at``); wait for all."""
        tasks = []
        for fault in faults:
            delay = started + fault.at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(self._one(fault)))
        await asyncio.gather(*tasks)
        if self._watchers:
            await asyncio.gather(*self._watchers)

    def restore_all(self) -> None:
        for target in self.targets.values():
            if target.proxy is not None:
                target.proxy.restore()
        if self.registry_proxy is not None:
            self.registry_proxy.restore()

    async def _one(self, fault: Fault) -> None:
        record: dict[str, Any] = {"kind": fault.kind, "target": fault.target,
                                  "planned_at": fault.at, "duration_s": fault.duration,
                                  "started_at": time.time()}  # fmt: skip
        self.records.append(record)
        try:
            await getattr(self, f"_{fault.kind}")(fault, record)
        except Exception as exc:  # a fault that could not be applied is reported, not fatal
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]

    async def _outage(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        assert target.proxy is not None
        if fault.kind == "cut":
            target.proxy.cut()
        else:
            target.proxy.stall()
        await asyncio.sleep(fault.duration)
        target.proxy.restore()
        record["reachable_at"] = time.time()
        self._watch(self._until_ok(target, record))

    _cut = _outage
    _stall = _outage

    async def _delay(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        assert target.proxy is not None
        target.proxy.delay(DELAY_S)
        record["latency_s"] = DELAY_S
        await asyncio.sleep(fault.duration)
        target.proxy.restore()
        record["reachable_at"] = time.time()

    async def _registry_cut(self, fault: Fault, record: dict[str, Any]) -> None:
        assert self.registry_proxy is not None
        self.registry_proxy.cut()
        await asyncio.sleep(fault.duration)
        self.registry_proxy.restore()
        record["reachable_at"] = time.time()
        self._watch(self._until_registry_reads(record))

    async def _kill(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        if target.engine == "postgresql":
            record["killed"] = await self._kill_pg(target)
        else:
            record["killed"] = await asyncio.to_thread(_kill_my, target.my_user or "")
        record["reachable_at"] = time.time()
        self._watch(self._until_ok(target, record))

    async def _kill_pg(self, target: Target) -> int:
        conn = await dbs.pg_admin()
        try:
            value = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE usename = $1 AND application_name = $2",
                self.pg_role,
                f"dbpool:{target.id}",
            )
            return int(value)
        finally:
            await conn.close()

    async def _patch(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        self._patches += 1
        body = {"queryTimeout": 5 + self._patches % 2}  # a pool setting: the pool is rebuilt
        status, _ = await self.recorder.call(
            self.http, "PATCH", f"{API}/{target.id}", target.name, "patch", body
        )
        record["status"] = status
        record["reachable_at"] = time.time()

    async def _deactivate(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        path = f"{API}/{target.id}"
        off, _ = await self.recorder.call(
            self.http, "PATCH", path, target.name, "deactivate", {"isActive": False}
        )
        await asyncio.sleep(fault.duration)
        on, _ = await self.recorder.call(
            self.http, "PATCH", path, target.name, "reactivate", {"isActive": True}
        )
        record["status"] = [off, on]
        record["reachable_at"] = time.time()

    async def _burst(self, fault: Fault, record: dict[str, Any]) -> None:
        target = self.targets[fault.target]
        size = BURST_FACTOR * target.max_connections
        sql = "SELECT pg_sleep(0.3)" if target.engine == "postgresql" else "SELECT SLEEP(0.3)"
        path = f"{API}/{target.id}/query"
        results = await asyncio.gather(
            *(
                self.recorder.call(self.http, "POST", path, target.name, "burst", {"sql": sql})
                for _ in range(size)
            )
        )
        statuses: dict[str, int] = {}
        for status, _ in results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        record["requests"] = size
        record["statuses"] = statuses

    def _watch(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _until_ok(self, target: Target, record: dict[str, Any]) -> None:
        """Seconds from ``reachable_at`` until pool-status says ``ok`` (and healthy)."""
        reachable = record["reachable_at"]
        path = f"{API}/{target.id}/pool-status"
        last: Any = None
        while time.time() - reachable < WATCH_LIMIT_S:
            try:
                response = await self.http.get(path)
                last = response.json().get("data")
            except (httpx.HTTPError, ValueError):
                last = None
            if isinstance(last, dict) and last.get("state") == "ok" and last.get("healthy"):
                record["seconds_to_ok"] = round(time.time() - reachable, 3)
                return
            await asyncio.sleep(POLL_S)
        record["seconds_to_ok"] = None
        record["last_status"] = last

    async def _until_registry_reads(self, record: dict[str, Any]) -> None:
        reachable = record["reachable_at"]
        some_id = next(iter(self.targets.values())).id
        while time.time() - reachable < WATCH_LIMIT_S:
            try:
                response = await self.http.get(f"{API}/{some_id}")
                if response.status_code == 200:
                    record["seconds_to_first_registry_read"] = round(time.time() - reachable, 3)
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(POLL_S)
        record["seconds_to_first_registry_read"] = None


def _kill_my(user: str) -> int:
    conn = dbs.my_admin()
    killed = 0
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
            for (pid,) in cur.fetchall():
                try:
                    cur.execute(f"KILL {int(pid)}")
                    killed += 1
                except Exception:  # gone between the listing and the KILL
                    continue
    finally:
        conn.close()
    return killed
