"""What the databases themselves see during the soak, sampled every ``PERIOD_S``.

Sessions per pool: PostgreSQL backends of the soak's role by ``application_name =
dbpool:<id>``; MariaDB connections by the pool's own account (one account per MariaDB
pool). A count over a pool's maximum is read again ``_CONFIRM_S`` later and kept only if
it is still over: a session the service has closed can take the server a moment to tear
down, while an overshoot of the pool's own (a replaced pool's connections kept open, a
session left running) lasts far longer. Statements whose client hung up are found by the
marker in their SQL text (``soak-dc-...``) and remembered with the last time they were
seen running.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from tests.support import dbs

__all__ = ["PERIOD_S", "SessionSampler"]

PERIOD_S = 0.5
_OVER_KEPT = 50  # samples above a pool's maximum kept for the report
_CONFIRM_S = 0.25  # a count over a maximum is read again this much later (see sample())
_MARKER = re.compile(r"soak-dc-[A-Za-z0-9-]+")


@dataclass
class SessionSampler:
    """``pg_pools``: application_name -> target; ``my_pools``: MariaDB user -> target."""

    pg_role: str
    pg_pools: dict[str, str]
    my_pools: dict[str, str]
    limits: dict[str, int]  # target -> its maxConnections
    peaks: dict[str, int] = field(default_factory=dict)
    over: list[list[Any]] = field(default_factory=list)  # [time, target, count, states]
    transient_over: int = 0  # samples whose first read was over a maximum (confirmed or not)
    samples: int = 0
    errors: int = 0
    statements_seen: dict[str, float] = field(default_factory=dict)  # marker -> last seen
    # marker -> its pool's sessions when it was last seen ("command seconds: statement")
    seen_beside: dict[str, list[str]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        """Sample until ``stop`` is set (failures counted, never fatal)."""
        conn: asyncpg.Connection | None = None
        try:
            while not stop.is_set():
                try:
                    if conn is None or conn.is_closed():
                        conn = await dbs.pg_admin()
                    await self.sample(conn)
                except Exception:  # a sample lost is counted; the soak goes on
                    self.errors += 1
                    conn = None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), PERIOD_S)
        finally:
            if conn is not None:
                await conn.close()

    async def sample(self, conn: asyncpg.Connection) -> dict[str, int]:
        """One sample of every pool's sessions; updates the peaks and returns the counts."""
        counts, states = await self._read(conn)
        if any(count > self.limits[target] for target, count in counts.items()):
            self.transient_over += 1
            await asyncio.sleep(_CONFIRM_S)
            again, states = await self._read(conn)
            counts = {target: min(count, again[target]) for target, count in counts.items()}
        now = time.time()
        for target, count in counts.items():
            self.peaks[target] = max(self.peaks.get(target, 0), count)
            if count > self.limits[target] and len(self.over) < _OVER_KEPT:
                self.over.append([round(now, 2), target, count, dict(states[target])])
        self.samples += 1
        return counts

    async def _read(
        self, conn: asyncpg.Connection
    ) -> tuple[dict[str, int], dict[str, Counter[str]]]:
        now = time.time()
        rows = await conn.fetch(
            "SELECT application_name, state, query FROM pg_stat_activity WHERE usename = $1",
            self.pg_role,
        )
        counts = dict.fromkeys([*self.pg_pools.values(), *self.my_pools.values()], 0)
        states: dict[str, Counter[str]] = {target: Counter() for target in counts}
        for row in rows:
            target = self.pg_pools.get(row["application_name"] or "")
            if target is not None:
                counts[target] += 1
                states[target][f"{row['state']}: {(row['query'] or '')[:48]}"] += 1
            if row["state"] == "active":
                self._saw(row["query"] or "", now)
        seen_my: list[tuple[str, str]] = []
        for user, command, seconds, info in await asyncio.to_thread(self._my_rows):
            target = self.my_pools[user]
            counts[target] += 1
            states[target][f"{command} {seconds}s: {(info or '')[:48]}"] += 1
            seen_my.append((info or "", target))
        for info, target in seen_my:
            self._saw(info, now, states[target])
        return counts, states

    def _saw(self, sql: str, now: float, beside: Counter[str] | None = None) -> None:
        for marker in _MARKER.findall(sql):
            self.statements_seen[marker] = now
            if beside is not None:
                self.seen_beside[marker] = [f"{n}x {what}" for what, n in beside.items()]

    def _my_rows(self) -> list[tuple[str, str, int, Any]]:
        if not self.my_pools:
            return []
        conn = dbs.my_admin()
        try:
            with conn.cursor() as cur:
                marks = ", ".join(["%s"] * len(self.my_pools))
                cur.execute(
                    "SELECT USER, COMMAND, TIME, INFO FROM information_schema.PROCESSLIST"
                    f" WHERE USER IN ({marks})",
                    tuple(self.my_pools),
                )
                return [(str(user), str(cmd), int(secs or 0), info)
                        for user, cmd, secs, info in cur.fetchall()]
        finally:
            conn.close()

    async def count_now(self) -> dict[str, int]:
        """Sessions per pool right now (used after the service has stopped)."""
        conn = await dbs.pg_admin()
        try:
            before, over = dict(self.peaks), len(self.over)
            counts = await self.sample(conn)
            self.peaks = before  # a count after shutdown is not a peak of the run
            del self.over[over:]
            return counts
        finally:
            await conn.close()
